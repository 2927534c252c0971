#!/usr/bin/env bash
# Bad input gets a one-line error naming the thing and the fix, and a non-zero exit.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")

printf 'train:\n  stepz: 5\n' > "$WORK/misspelled.yaml"
expect_error "misspelled config key" "unknown key 'train.stepz'.*did you mean 'train.steps'" \
  "$TESSERA_BIN/tessera-train" "$WORK/misspelled.yaml"

expect_error "wrong type" "model.n_layer.*integer.*four" \
  "$TESSERA_BIN/tessera-train" configs/tiny.yaml --set model.n_layer=four

expect_error "CUDA asked for" "train.device.{1,2}cuda.*use train.device=cpu" \
  "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set train.device=cuda
expect_error "missing config file" "config file.*nope.yaml" \
  "$TESSERA_BIN/tessera-train" configs/nope.yaml

expect_error "missing data file" "/nonexistent/train.bin" \
  "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set data.train=/nonexistent/train.bin

head -c 4096 /dev/urandom > "$WORK/garbage.bin"
expect_error "shard with a wrong magic" "garbage.bin.*magic" \
  "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set data.train="$WORK/garbage.bin"

expect_error "bad command line" "command line" "$TESSERA_BIN/tessera-train" --no-such-flag

expect_error "weights file that does not exist" "checkpoint '/nonexistent/model.h5': not found; check the path" \
  "$TESSERA_BIN/tessera-generate" /nonexistent/model.h5 --prompt hi

# A trained (2-step) model for the generation errors.
"$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set train.steps=2 > "$WORK/train.log" 2>&1 \
  || { cat "$WORK/train.log"; fail "2-step training run"; }
long_prompt=$(head -c 3000 "$TESSERA_ROOT/data/shakespeare.txt")
expect_error "prompt longer than the context" "prompt is [0-9]+ tokens.*shorten the prompt" \
  "$TESSERA_BIN/tessera-generate" "$WORK/run/model.h5" --prompt "$long_prompt"
# An llm.c model file (its magic, 20240326 little-endian) is named as such, with the fix.
{ printf '\xc6\xd7\x34\x01'; head -c 2000 /dev/zero; } > "$WORK/gpt2.bin"
expect_error "llm.c file given to generate" "is an llm.c model file; convert it first: tessera-ckpt convert" \
  "$TESSERA_BIN/tessera-generate" "$WORK/gpt2.bin" --prompt hi

finish
