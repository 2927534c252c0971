#!/usr/bin/env bash
# Configures and builds Tessera (Release).
#   scripts/build.sh [CMAKE_ARGS...]          everything in build/: libraries, apps, tests,
#                                             benchmarks, the CUDA backend when nvcc is found
#   scripts/build.sh --apps [TARGET...]       the CPU apps only, in build-cpu/ (the main job's
#                                             build, and what `cmake --install`/cpack package);
#                                             TARGETs default to all six apps
# Shows the build's progress one line per compiled file; on a failure, the compiler's messages.
set -euo pipefail
cd "$(dirname "$0")/.."

# Prints "[ 42%] src/models/gpt.cpp" for each object make starts, and every line that is not a
# progress line (warnings, errors); the full log stays in the file named by $1.
progress() {
  local log=$1
  : > "$log"
  while IFS= read -r line; do
    printf '%s\n' "$line" >> "$log"
    case $line in
      *"Building CXX object"* | *"Building CUDA object"*)
        local pct=${line%%]*}; local obj=${line##* }; obj=${obj#*.dir/}; obj=${obj%.o}
        printf '  %s] %s\n' "$pct" "$obj" ;;
      *"Linking CXX"*) printf '  %s] link %s\n' "${line%%]*}" "${line##* }" ;;
      "["*"] "* | "-- "* | "Consolidate compiler"* | "Scanning dependencies"* | "Built target"* | \
        *"Built target"* | "gmake"*"Entering"* | "gmake"*"Leaving"*) ;;
      *) printf '%s\n' "$line" ;;
    esac
  done
}

if [[ ${1:-} == --apps ]]; then
  shift
  targets=("$@")
  ((${#targets[@]})) || targets=(tessera-train tessera-generate tessera-data tessera-ckpt tessera-serve tessera-plan)
  mkdir -p build-cpu
  cmake -S . -B build-cpu -DCMAKE_BUILD_TYPE=Release -DTESSERA_CUDA=OFF -DTESSERA_TESTS=OFF \
    -DTESSERA_BENCH=OFF > build-cpu/configure.log 2>&1 || { cat build-cpu/configure.log; exit 1; }
  cmake --build build-cpu -j"$(nproc)" --target "${targets[@]}" 2>&1 | progress build-cpu/build.log
  exit 0
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" > build.log 2>&1 || { cat build.log; exit 1; }
cmake --build build -j"$(nproc)" 2>&1 | tail -n 3
