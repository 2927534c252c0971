#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test (ctest). `.ci/run` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=PASSIVE
ctest --test-dir build --output-on-failure -j2 "$@"
