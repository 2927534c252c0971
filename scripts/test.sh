#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test (ctest). `.ci/run` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Everything with the CPU backend (build/): what the tests below run.
scripts/build.sh
# Everything again with the CUDA backend (build-cuda/) where nvcc is found: every .cu file, every
# CUDA test and every app and benchmark compiled and linked (the CPU layers' objects come from the
# compiler cache). A CUDA-linked binary pays about 1 s of CPU to load NVIDIA's libraries at
# every start, which is why the tests run from build/.
cuda=no
if command -v nvcc > /dev/null || [[ -x /usr/local/cuda/bin/nvcc ]]; then
  scripts/build.sh --cuda
  cuda=yes
fi
# The CPU-only build the main job runs and the .deb is made from (tests/apps/install_test.sh).
scripts/build.sh --apps
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=PASSIVE
# The Slurm tests' local cluster comes up and goes down inside ctest (fixture slurm_cluster, see
# tests/CMakeLists.txt); this trap makes sure no daemon of it outlives the command, whatever happens.
trap 'scripts/slurm/local-cluster.sh down > /dev/null 2>&1 || true' EXIT
ctest --test-dir build --output-on-failure -j2 "$@"
# In the CUDA build, what differs there without a GPU: train.device=cuda and --device cuda end in
# "no usable CUDA device" (not "no CUDA backend"), and the CUDA test programs say Not Run.
if [[ $cuda == yes ]]; then
  ctest --test-dir build-cuda --output-on-failure -j2 \
    -R '^(apps\.(train_device|train_generate)_test|cuda\.kernels|cuda_mpi\.np[124])$'
fi
# Then the sanitizer build (docs/RELIABILITY.md): the unit tests and the MPI tests at 1 and 2
# ranks under AddressSanitizer + UndefinedBehaviorSanitizer + LeakSanitizer, and every fuzzer for
# TESSERA_FUZZ_SECONDS (30 s) from its seed corpus; any finding fails the command.
scripts/build_asan.sh
ctest --test-dir build-asan --output-on-failure -j2 -L 'unit|mpi|fuzz'
