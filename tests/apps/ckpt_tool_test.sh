#!/usr/bin/env bash
# tessera-ckpt: inspect shows a trained checkpoint's step and datasets; verify accepts the good
# file and rejects a copy with flipped data bytes (checksum mismatch), a truncated copy and a
# missing file, each with a one-line error.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")
ck="$WORK/ckpt"

"$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set train.steps=3 --set train.log_every=1 \
  --set train.val_every=0 --set checkpoint.dir="$ck" --set checkpoint.every=3 \
  > "$WORK/train.log" 2>&1 || { fail "training run failed"; tail -5 "$WORK/train.log"; }
file="$ck/$(cat "$ck/latest" 2>/dev/null)"
[[ -f "$file" ]] && pass "trained; latest names $file" || fail "no checkpoint: '$file'"

"$TESSERA_BIN/tessera-ckpt" inspect "$file" > "$WORK/inspect.txt" 2>&1
rc=$?
[[ $rc -eq 0 ]] && pass "inspect exits 0" || { fail "inspect exit $rc"; cat "$WORK/inspect.txt"; }
grep -Eq '^step +3$' "$WORK/inspect.txt" && pass "inspect prints step 3" \
  || { fail "inspect: no 'step 3' line"; head -12 "$WORK/inspect.txt"; }
# wte: (Vp, C) = (512, 64) with vocab 512 and n_embd 64 from small_sets.
grep -Eq '^ +/model/wte +\(512, 64\) +float32 +131072 +0x[0-9a-f]{16}$' "$WORK/inspect.txt" \
  && pass "inspect lists /model/wte (512, 64) float32 with its checksum" \
  || { fail "inspect: no /model/wte row"; grep -n 'wte\|name' "$WORK/inspect.txt"; }
grep -q 'n_embd: 64' "$WORK/inspect.txt" && pass "inspect prints the stored config" \
  || fail "inspect: stored config missing"
grep -Eq '^total: [0-9]+ datasets' "$WORK/inspect.txt" && pass "inspect prints totals" \
  || fail "inspect: no totals line"

out=$("$TESSERA_BIN/tessera-ckpt" verify "$file" 2>&1)
rc=$?
[[ $rc -eq 0 && "$out" == *": sound ("*"datasets, checksums verified)"* ]] \
  && pass "verify the good file: $out" || fail "verify the good file: exit $rc: $out"

# Flip 64 bytes in the second half of the file: all contiguous dataset data in these files.
size=$(stat -c %s "$file")
cp "$file" "$WORK/corrupt.h5"
head -c 64 /dev/urandom | dd of="$WORK/corrupt.h5" bs=1 seek=$((size * 3 / 4)) count=64 \
  conv=notrunc status=none
cmp -s "$file" "$WORK/corrupt.h5" && fail "corruption did not change the file"
expect_error "verify a file with flipped data bytes" "checksum mismatch" \
  "$TESSERA_BIN/tessera-ckpt" verify "$WORK/corrupt.h5"

head -c $((size / 2)) "$file" > "$WORK/truncated.h5"
expect_error "verify a truncated file" "truncated.h5" \
  "$TESSERA_BIN/tessera-ckpt" verify "$WORK/truncated.h5"
expect_error "inspect a truncated file" "truncated.h5.*HDF5" \
  "$TESSERA_BIN/tessera-ckpt" inspect "$WORK/truncated.h5"

expect_error "verify a missing file" "$WORK/nope.h5.*not found" \
  "$TESSERA_BIN/tessera-ckpt" verify "$WORK/nope.h5"
expect_error "inspect a missing file" "$WORK/nope.h5.*not found" \
  "$TESSERA_BIN/tessera-ckpt" inspect "$WORK/nope.h5"
expect_error "inspect a file that is not HDF5" "shakespeare.txt.*HDF5" \
  "$TESSERA_BIN/tessera-ckpt" inspect data/shakespeare.txt
finish
