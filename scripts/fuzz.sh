#!/usr/bin/env bash
# Runs one libFuzzer target (tests/fuzz/TARGET_fuzz.cpp) for SECONDS from its committed seed
# corpus, then prints its executions (docs/RELIABILITY.md, "Sanitizers and fuzzers").
# Usage: scripts/fuzz.sh TARGET SECONDS [libFuzzer flags...]
#   TARGET: config, tokenizer, token_shard, checkpoint, llmc or serve_request.
#   scripts/fuzz.sh tokenizer 14400          # four hours (the CI runs each for 30 s)
#   scripts/fuzz.sh llmc 3600 -jobs=2 -workers=2
# It builds build-asan/ (scripts/build_asan.sh, incremental) unless TESSERA_FUZZ_BUILD names a
# built tree, as ctest's fuzz.* entries do. Inputs that reach new code go to
# BUILD/fuzz/corpus/TARGET/ (kept between runs; the committed seeds are only read). A finding
# (crash, sanitizer report, failed property, leak, timeout) is saved as
# BUILD/fuzz/artifacts/TARGET/crash-* (or leak-*, timeout-*) and the exit status is non-zero;
# reproduce it with BUILD/tests/fuzz/TARGET_fuzz FILE, then fix it, add FILE to
# tests/fuzz/corpus/TARGET/ and a unit test.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if (($# < 2)) || ! [[ $2 =~ ^[0-9]+$ ]]; then
  echo "usage: scripts/fuzz.sh TARGET SECONDS [libFuzzer flags...]" >&2
  echo "  targets: $(cd "$root/tests/fuzz" && ls *_fuzz.cpp | sed 's/_fuzz.cpp//' | tr '\n' ' ')" >&2
  exit 2
fi
target=${1%_fuzz}
seconds=$2
shift 2
if [[ ! -f $root/tests/fuzz/${target}_fuzz.cpp ]]; then
  echo "fuzz: no target '$target' (tests/fuzz/${target}_fuzz.cpp); targets:" \
    "$(cd "$root/tests/fuzz" && ls *_fuzz.cpp | sed 's/_fuzz.cpp//' | tr '\n' ' ')" >&2
  exit 2
fi
build=${TESSERA_FUZZ_BUILD:-}
if [[ -z $build ]]; then
  build="$root/build-asan"
  "$root/scripts/build_asan.sh" "${target}_fuzz"
fi
binary="$build/tests/fuzz/${target}_fuzz"
seeds="$root/tests/fuzz/corpus/$target"
corpus="$build/fuzz/corpus/$target"
artifacts="$build/fuzz/artifacts/$target"
log="$build/fuzz/$target.log"
mkdir -p "$corpus" "$artifacts"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
# Fast unwinding at malloc (3 to 7 times the executions of the tests' full stacks): no fuzzer
# needs lsan.supp's stacks, since checkpoint_fuzz keeps MPI_Init's allocations out of the leak
# check itself. Settings the caller gives in ASAN_OPTIONS come after, so they win.
export ASAN_OPTIONS="fast_unwind_on_malloc=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
start=$(date +%s)
status=0
# -timeout: one input may take 20 s before it counts as a hang; -rss_limit_mb: libFuzzer's
# default 2 GB bound on memory is a finding too.
"$binary" -max_total_time="$seconds" -print_final_stats=1 -timeout=20 -rss_limit_mb=2048 \
  -artifact_prefix="$artifacts/" "$@" "$corpus" "$seeds" > "$log" 2>&1 || status=$?
elapsed=$(($(date +%s) - start))
stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
execs=$(stat number_of_executed_units)
if ((status != 0)); then
  tail -n 60 "$log"
  echo "fuzz $target: FAILED (exit $status) after ${elapsed} s, ${execs:-?} executions;" \
    "the input is in $artifacts/ and the whole log in $log" >&2
  exit "$status"
fi
units=$(find "$corpus" -type f | wc -l)
echo "fuzz $target: ${execs:-?} executions in ${elapsed} s ($(stat average_exec_per_sec)/s)," \
  "$(stat new_units_added) new inputs, corpus $units + $(find "$seeds" -type f | wc -l) seeds," \
  "peak RSS $(stat peak_rss_mb) MB, no finding"
printf '%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$target" "$elapsed" "${execs:-?}" \
  >> "$build/fuzz/stats.tsv"
