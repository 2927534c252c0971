#!/usr/bin/env bash
# Bad generation options, an empty prompt, a directory given as data, an empty corpus, a small
# vocabulary and malformed tokenizer files (issue 15): each a one-line error naming the option or
# file, the value and the fix, and a non-zero exit; under mpirun every rank fails alike, at once.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")

# A trained (2-step) model to generate from.
"$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set train.steps=2 > "$WORK/train.log" 2>&1 \
  || { cat "$WORK/train.log"; fail "2-step training run"; finish; exit 1; }
model=$WORK/run/model.h5
gen=("$TESSERA_BIN/tessera-generate" "$model" --prompt "ROMEO:")

# ---- Generation options: the option, the value, the allowed range --------------------------
expect_error "--temperature -1" '--temperature -1 is out of range: it must be a finite number >= 0' \
  "${gen[@]}" --temperature -1
expect_error "--temperature nan" '--temperature nan is out of range: it must be a finite number >= 0' \
  "${gen[@]}" --temperature nan
expect_error "--top-k -3" '--top-k -3 is out of range: it must be >= 0 \(0: off' \
  "${gen[@]}" --top-k -3
expect_error "--top-p 1.5" '--top-p 1.5 is out of range: it must satisfy 0 < top_p <= 1' \
  "${gen[@]}" --top-p 1.5
expect_error "--top-p -1" '--top-p -1 is out of range: it must satisfy 0 < top_p <= 1' \
  "${gen[@]}" --top-p -1
expect_error "--top-p 0" '--top-p 0 is out of range: it must satisfy 0 < top_p <= 1' \
  "${gen[@]}" --top-p 0
expect_error "-n -5" '--max-tokens -5 is out of range: it must be >= 1' \
  "${gen[@]}" -n -5
expect_error "--max-tokens 0" '--max-tokens 0 is out of range: it must be >= 1' \
  "${gen[@]}" --max-tokens 0
# The edges of the ranges still generate.
out=$("${gen[@]}" --temperature 0 --top-k 0 --top-p 1 -n 1 2> "$WORK/err") \
  && [[ "$out" == ROMEO:* ]] && pass "range edges accepted: [$out]" \
  || { fail "range edges rejected: $(cat "$WORK/err")"; }

# Under mpirun -n 2 every rank checks the arguments itself, before any collective, and fails
# within seconds with the same message: rank 0 prints it once for all, and no rank aborts the
# job (no Open MPI abort banner); the exit is non-zero.
start=$(date +%s.%N)
timeout 60 mpirun --oversubscribe --bind-to none -n 2 "${gen[@]}" --top-p 1.5 > "$WORK/out" \
  2> "$WORK/err"
rc=$?
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
want='^\[all 2 ranks\] tessera-generate: --top-p 1.5 is out of range: it must satisfy 0 < top_p <= 1'
if [[ $rc -eq 0 || $rc -eq 124 ]]; then
  fail "mpirun -n 2 --top-p 1.5: exit $rc"
elif awk -v t="$elapsed" 'BEGIN { exit !(t >= 10) }'; then
  fail "mpirun -n 2 --top-p 1.5: took $elapsed s (limit 10 s)"
elif [[ $(grep -c 'tessera-generate:' "$WORK/err") -ne 1 ]] || ! grep -Eq -- "$want" "$WORK/err" \
  || grep -q MPI_ABORT "$WORK/err"; then
  fail "mpirun -n 2 --top-p 1.5: want one line /$want/ and no abort banner:"
  sed 's/^/    /' "$WORK/err"
else
  pass "mpirun -n 2 --top-p 1.5: printed once for both ranks, exit $rc in $elapsed s"
fi

# ---- The prompt -------------------------------------------------------------------------------
expect_error "empty --prompt" "--prompt is empty; give the text to continue" \
  "$TESSERA_BIN/tessera-generate" "$model" --prompt ""
expect_error "empty prompt on stdin" "the prompt read from stdin is empty; pipe some text in" \
  "$TESSERA_BIN/tessera-generate" "$model" < /dev/null

# ---- Token shards -------------------------------------------------------------------------------
mkdir -p "$WORK/adir"
expect_error "directory as data.train" \
  "data.train: data file '$WORK/adir' is a directory, not a token file; give a .bin written by tessera-data" \
  "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set data.train="$WORK/adir"
: > "$WORK/empty.bin"
expect_error "empty file as data.train" "data file '$WORK/empty.bin' is empty \(0 bytes\), not a token file" \
  "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set data.train="$WORK/empty.bin"
head -c 100 /dev/zero > "$WORK/short.bin"
expect_error "file shorter than the header as data.train" \
  "data file '$WORK/short.bin': truncated: 100 bytes, shorter than the 1024-byte header" \
  "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set data.train="$WORK/short.bin"
expect_error "directory given to tessera-data info" "'$WORK/adir' is a directory, not a token file" \
  "$TESSERA_BIN/tessera-data" info "$WORK/adir"

# ---- tessera-data's input -----------------------------------------------------------------------
: > "$WORK/empty.txt"
expect_error "empty corpus (prepare)" "--input '$WORK/empty.txt' is empty \(0 bytes\); give a text corpus" \
  "$TESSERA_BIN/tessera-data" prepare --input "$WORK/empty.txt" --vocab-size 512 --out-dir "$WORK/o1"
expect_error "empty corpus (train-tokenizer)" "--input '$WORK/empty.txt' is empty \(0 bytes\)" \
  "$TESSERA_BIN/tessera-data" train-tokenizer --input "$WORK/empty.txt" --vocab-size 512 --out "$WORK/o2"
[[ ! -e "$WORK/o2.vocab.json" ]] && pass "no tokenizer written from an empty corpus" \
  || fail "a tokenizer was written from an empty corpus"
expect_error "directory as corpus" "--input '$WORK/adir' is a directory, not a text file" \
  "$TESSERA_BIN/tessera-data" prepare --input "$WORK/adir" --vocab-size 512 --out-dir "$WORK/o3"
expect_error "--vocab-size 256" \
  "--vocab-size 256 is too small: a byte-level BPE needs the 256 byte tokens \+ <\|endoftext\|>, so at least 257; give e.g. --vocab-size 4096" \
  "$TESSERA_BIN/tessera-data" prepare --input "$WORK/small.txt" --vocab-size 256 --out-dir "$WORK/o4"

# ---- Malformed tokenizer files ------------------------------------------------------------------
tok=$WORK/data/tokenizer
tokenize=("$TESSERA_BIN/tessera-data" tokenize --input "$WORK/small.txt" --train-out "$WORK/t.bin"
  --val-out "$WORK/v.bin" --tokenizer)  # + the prefix
cp "$tok.merges.txt" "$WORK/badjson.merges.txt"
printf '{"a": 1,' > "$WORK/badjson.vocab.json"
expect_error "truncated vocab.json" \
  "tokenizer vocabulary '$WORK/badjson.vocab.json' is not valid JSON .*expected GPT-2's vocab.json" \
  "${tokenize[@]}" "$WORK/badjson"
cp "$tok.vocab.json" "$WORK/garbage.vocab.json"
head -c 3000 /dev/urandom | tr ' ' x > "$WORK/garbage.merges.txt"
expect_error "garbage merges.txt" \
  "tokenizer merges '$WORK/garbage.merges.txt' line [0-9]+: .* is not two tokens separated by one space" \
  "${tokenize[@]}" "$WORK/garbage"
cp "$tok.vocab.json" "$WORK/dir.vocab.json"
mkdir -p "$WORK/dir.merges.txt"
expect_error "directory as merges.txt" "tokenizer merges '$WORK/dir.merges.txt' is a directory" \
  "${tokenize[@]}" "$WORK/dir"
# The same from tessera-generate, before any text comes out.
expect_error "truncated vocab.json (generate)" "tokenizer vocabulary '$WORK/badjson.vocab.json' is not valid JSON" \
  "${gen[@]}" --tokenizer "$WORK/badjson"

finish
