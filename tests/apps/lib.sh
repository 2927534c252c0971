# Shared helpers for the end-to-end app tests (sourced). TESSERA_BIN and TESSERA_ROOT come from
# ctest; run by hand: TESSERA_BIN=build/apps TESSERA_ROOT=. bash tests/apps/<name>_test.sh
set -uo pipefail
: "${TESSERA_BIN:?set TESSERA_BIN to the apps directory of a build}"
: "${TESSERA_ROOT:?set TESSERA_ROOT to the repository root}"
export OMP_WAIT_POLICY=PASSIVE
WORK=$(mktemp -d /tmp/tessera-apptest.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
failures=0
passes=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok: $*"; passes=$((passes + 1)); }

# expect_error NAME PATTERN CMD...: CMD must exit non-zero within 60 s and print exactly one
# stderr line, matching the extended regex PATTERN.
expect_error() {
  local name=$1 pattern=$2
  shift 2
  timeout 60 "$@" > "$WORK/out" 2> "$WORK/err"
  local rc=$?
  local lines
  lines=$(grep -c . "$WORK/err")
  if [[ $rc -eq 0 ]]; then
    fail "$name: exit code 0, expected non-zero"
  elif [[ $rc -eq 124 ]]; then
    fail "$name: timed out"
  elif ! grep -Eq -- "$pattern" "$WORK/err"; then
    fail "$name: stderr does not match /$pattern/:"; sed 's/^/    /' "$WORK/err"
  elif [[ $lines -ne 1 ]]; then
    fail "$name: expected a one-line error, got $lines lines:"; sed 's/^/    /' "$WORK/err"
  else
    pass "$name (exit $rc): $(cat "$WORK/err")"
  fi
}

# make_small_data DIR: a 512-token tokenizer and shards from the first 200 kB of the corpus.
make_small_data() {
  head -c 200000 "$TESSERA_ROOT/data/shakespeare.txt" > "$WORK/small.txt"
  "$TESSERA_BIN/tessera-data" prepare --input "$WORK/small.txt" --vocab-size 512 --out-dir "$1" \
    > "$WORK/prepare.log" 2>&1 || { cat "$WORK/prepare.log"; fail "tessera-data prepare"; }
}

# Small-model overrides for fast runs on the data from make_small_data.
small_sets() {
  local d=$1
  echo --set model.vocab_size=512 --set model.n_layer=2 --set model.n_embd=64 \
    --set model.n_head=4 --set model.max_seq_len=64 --set train.seq_len=32 \
    --set train.batch_size=8 --set train.val_every=10 --set train.val_batches=2 \
    --set data.train=$d/train.bin --set data.val=$d/val.bin --set data.tokenizer=$d/tokenizer \
    --set train.out_dir=$WORK/run
}

finish() {
  echo "$passes passed, $failures failed"
  [[ $failures -eq 0 ]]
}
