#!/usr/bin/env bash
# Errors never hang: a failure on one rank of 4 (a data file only it cannot open; a bad shard only
# it reads; an exception in the middle of a step while the others wait in a collective) and a bad grid shape end every rank
# with a non-zero exit and the rank-prefixed message, within 10 seconds; the grid error, alike on
# every rank, is printed once.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")
mpirun=(mpirun --oversubscribe --bind-to none)

# expect_mpi_failure NAME PATTERN N FAULT [extra args]: under mpirun -n N, with
# TESSERA_INJECT_FAULT=FAULT, exits non-zero within 10 s and stderr matches PATTERN.
expect_mpi_failure() {
  local name=$1 pattern=$2 n=$3 fault=$4
  shift 4
  local start end rc
  start=$(date +%s.%N)
  TESSERA_INJECT_FAULT=$fault timeout 60 "${mpirun[@]}" -n "$n" -x TESSERA_INJECT_FAULT \
    "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets "$@" > "$WORK/out" 2> "$WORK/err"
  rc=$?
  end=$(date +%s.%N)
  local elapsed
  elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  if [[ $rc -eq 0 ]]; then
    fail "$name: exit code 0"
  elif [[ $rc -eq 124 ]]; then
    fail "$name: hung (killed after 60 s)"
  elif ! grep -Eq -- "$pattern" "$WORK/err"; then
    fail "$name: stderr does not match /$pattern/:"; head -5 "$WORK/err" | sed 's/^/    /'
  elif awk -v t="$elapsed" 'BEGIN { exit !(t >= 10) }'; then
    fail "$name: took ${elapsed} s (limit 10 s)"
  else
    pass "$name: exit $rc in ${elapsed} s: $(grep -Em1 -- "$pattern" "$WORK/err")"
  fi
}

expect_mpi_failure "data file only rank 2 cannot open" \
  '^\[rank 2 \(dp 1, tp 0\)\] tessera-train: data.train: data file .*injected-missing' 4 data@2 \
  --set parallel.tp=2 --set train.steps=50
head -c 4096 /dev/urandom > "$WORK/data/train.bin.injected-corrupt"
expect_mpi_failure "bad shard on rank 1 only" \
  '^\[rank 1 \(dp 0, tp 1\)\] tessera-train: data.train: data file .*injected-corrupt.*bad magic' 4 shard@1 \
  --set parallel.tp=2 --set train.steps=50
expect_mpi_failure "exception on rank 3 inside step 3" \
  '^\[rank 3 \(dp 1, tp 1\)\] tessera-train: running backward of step 3: injected fault' 4 step@3 \
  --set parallel.tp=2 --set train.steps=50
expect_mpi_failure "world size not divisible by tp" \
  'world size 3 is not divisible by parallel.tp 2' 3 none \
  --set parallel.tp=2
expect_mpi_failure "heads not divisible by tp" \
  'model.n_head 4 is not divisible by parallel.tp 3' 3 none \
  --set parallel.tp=3 --set model.n_head=4
# A grid error every rank detects alike is said once, by rank 0 for all, without an abort banner.
if [[ $(grep -c 'tessera-train:' "$WORK/err") -eq 1 ]] && grep -q '^\[all 3 ranks\] tessera-train: ' "$WORK/err" \
  && ! grep -q MPI_ABORT "$WORK/err"; then
  pass "the grid error is printed once: $(grep -m1 'tessera-train:' "$WORK/err")"
else
  fail "the grid error: want one '[all 3 ranks]' line and no MPI_ABORT banner:"; sed 's/^/    /' "$WORK/err"
fi
finish
