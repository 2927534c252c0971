#!/usr/bin/env bash
# The bad-input catalogue (issue 15), its single-process half: one table of bad inputs to the five
# apps (bad_input_catalogue.py), each row run end to end at 1 rank here; the same rows' runs on a
# grid are bad_input_catalogue_grid_test.sh. Each run asserts a non-zero exit without a crash,
# that it ended within 10 s, and the message naming the thing and the fix. The table and the
# runner are in bad_input_catalogue.py (Debian's python3, standard library only). Exit 77 (ctest:
# Not Run) only when the full-disk rows could not run (no tmpfs: needs root) and every other row
# passed.
: "${TESSERA_BIN:?set TESSERA_BIN to the apps directory of a build}"
: "${TESSERA_ROOT:?set TESSERA_ROOT to the repository root}"
[[ -x /usr/bin/python3 ]] || { echo "NOT RUN: /usr/bin/python3 is missing"; exit 77; }
exec /usr/bin/python3 "$(dirname "$0")/bad_input_catalogue.py" --ranks single "$@"
