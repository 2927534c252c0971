#!/usr/bin/env bash
# Configures and builds the sanitizer build in build-asan/ (docs/RELIABILITY.md): clang,
# AddressSanitizer + UndefinedBehaviorSanitizer at -O1 (TESSERA_SANITIZE=ON), no CUDA, no
# benchmarks. Incremental. Arguments: the targets to build; default the unit and MPI test
# executables and every fuzzer (tests/fuzz/*_fuzz.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(tessera_unit_tests tessera_mpi_tests)
  for f in tests/fuzz/*_fuzz.cpp; do targets+=("$(basename "$f" .cpp)"); done
fi
mkdir -p build-asan
log=build-asan/build.log
if [[ ! -f build-asan/CMakeCache.txt ]]; then
  CC=clang CXX=clang++ cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Release -DTESSERA_SANITIZE=ON \
    -DTESSERA_CUDA=OFF -DTESSERA_BENCH=OFF > "$log" 2>&1 || { cat "$log"; exit 1; }
fi
cmake --build build-asan -j"$(nproc)" --target "${targets[@]}" >> "$log" 2>&1 ||
  { tail -n 60 "$log"; echo "build-asan: build failed; $log has it all" >&2; exit 1; }
echo "build-asan: built ${targets[*]}"
