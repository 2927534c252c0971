#!/usr/bin/env bash
# Configures and builds Tessera (Release).
#   scripts/build.sh [CMAKE_ARGS...]          everything in build/ with the CPU backend: libraries,
#                                             apps, tests, benchmarks (the test command's build)
#   scripts/build.sh --cuda [CMAKE_ARGS...]   everything in build-cuda/ with the CUDA backend too
#                                             (needs nvcc); what a GPU machine runs
#   scripts/build.sh --apps [TARGET...]       the CPU apps only, in build-cpu/ (the main job's
#                                             build, and what `cmake --install`/cpack package);
#                                             TARGETs default to all six apps
# Compiles through ccache when it is installed (scripts/setup.sh installs it): the three trees
# compile the CPU layers with the same flags, so each object is compiled once and reused by the
# others. The cache is .cache/ccache in the checkout unless CCACHE_DIR says otherwise, so a fresh
# clone starts cold (docs/INSTALL.md).
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

launcher=()
if command -v ccache > /dev/null; then
  export CCACHE_DIR=${CCACHE_DIR:-$PWD/.cache/ccache} CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi

if [[ ${1:-} == --apps ]]; then
  shift
  targets=("$@")
  ((${#targets[@]})) || targets=(tessera-train tessera-generate tessera-data tessera-ckpt tessera-serve tessera-plan)
  mkdir -p build-cpu
  cmake -S . -B build-cpu -DCMAKE_BUILD_TYPE=Release -DTESSERA_CUDA=OFF -DTESSERA_TESTS=OFF \
    -DTESSERA_BENCH=OFF "${launcher[@]}" > build-cpu/configure.log 2>&1 ||
    { cat build-cpu/configure.log; exit 1; }
  cmake --build build-cpu -j"$(nproc)" --target "${targets[@]}" 2>&1 | progress build-cpu/build.log
  exit 0
fi

dir=build cuda=OFF
if [[ ${1:-} == --cuda ]]; then
  shift
  dir=build-cuda cuda=ON
  command -v nvcc > /dev/null || [[ -x /usr/local/cuda/bin/nvcc ]] || {
    echo "build.sh --cuda: no nvcc on PATH or in /usr/local/cuda/bin; install the CUDA Toolkit" \
      "(docs/CUDA.md) or build the CPU backend alone: scripts/build.sh" >&2
    exit 1
  }
fi
mkdir -p "$dir"
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DTESSERA_CUDA=$cuda "${launcher[@]}" "$@" \
  > "$dir/configure.log" 2>&1 || { cat "$dir/configure.log"; exit 1; }
cmake --build "$dir" -j"$(nproc)" 2>&1 | progress "$dir/build.log"
