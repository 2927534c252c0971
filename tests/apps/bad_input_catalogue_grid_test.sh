#!/usr/bin/env bash
# The bad-input catalogue (issue 15), its grid half: the rows of bad_input_catalogue.py where a
# grid matters, run at 2 or 4 ranks under mpirun; each asserts a non-zero exit on every rank
# without a crash, every rank ended within 10 s, no rank printed a different error, and the
# message naming the thing and the fix. The same rows at 1 rank: bad_input_catalogue_test.sh.
: "${TESSERA_BIN:?set TESSERA_BIN to the apps directory of a build}"
: "${TESSERA_ROOT:?set TESSERA_ROOT to the repository root}"
[[ -x /usr/bin/python3 ]] || { echo "NOT RUN: /usr/bin/python3 is missing"; exit 77; }
exec /usr/bin/python3 "$(dirname "$0")/bad_input_catalogue.py" --ranks grid "$@"
