#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test (ctest). `.ci/run` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
# The CPU-only build the main job runs and the .deb is made from (tests/apps/install_test.sh).
scripts/build.sh --apps
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=PASSIVE
# The Slurm tests' local cluster comes up and goes down inside ctest (fixture slurm_cluster, see
# tests/CMakeLists.txt); this trap makes sure no daemon of it outlives the command, whatever happens.
trap 'scripts/slurm/local-cluster.sh down > /dev/null 2>&1 || true' EXIT
ctest --test-dir build --output-on-failure -j2 "$@"
# Then the sanitizer build (docs/RELIABILITY.md): the unit tests and the MPI tests at 1 and 2
# ranks under AddressSanitizer + UndefinedBehaviorSanitizer + LeakSanitizer, and every fuzzer for
# TESSERA_FUZZ_SECONDS (30 s) from its seed corpus; any finding fails the command.
scripts/build_asan.sh
ctest --test-dir build-asan --output-on-failure -j2 -L 'unit|mpi|fuzz'
