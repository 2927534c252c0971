#!/usr/bin/env bash
# tessera-ckpt convert: HDF5 -> llm.c .bin (layout checked by an independent numpy reader of
# llm.c's format) -> HDF5 is bitwise; bf16 for serving loads, generates and stays near float32;
# --drop-optimizer leaves weights only; corrupt, truncated and foreign inputs, an existing output
# and a bad --to each fail with a one-line error and leave no output file.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")
ck="$WORK/ckpt"
ckpt="$TESSERA_BIN/tessera-ckpt"

# Written on a tp=2 grid: the conversion must not care which grid wrote the file.
mpirun --oversubscribe --bind-to none -n 2 "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets \
  --set parallel.tp=2 --set train.steps=4 --set train.val_every=0 --set checkpoint.dir="$ck" \
  --set checkpoint.every=4 > "$WORK/train.log" 2>&1 || { fail "training run"; tail -5 "$WORK/train.log"; }
src="$ck/$(cat "$ck/latest" 2>/dev/null)"
[[ -f "$src" ]] && pass "trained on 1x2; checkpoint $src" || fail "no checkpoint"

# ---- llm.c round trip ----
"$ckpt" convert "$src" "$WORK/model.bin" > "$WORK/c1.log" 2>&1 \
  && pass "convert to llm.c: $(cat "$WORK/c1.log")" || { fail "convert to .bin"; cat "$WORK/c1.log"; }
# An independent reader of llm.c's file: header, then wte, wpe, each per-layer kind over all
# layers in llm.c's order, ln_f; every tensor must equal the checkpoint's bitwise.
/usr/bin/python3 - "$WORK/model.bin" "$src" > "$WORK/layout.log" 2>&1 <<'EOF'
import sys
import h5py, numpy as np
bin_path, h5_path = sys.argv[1], sys.argv[2]
raw = open(bin_path, "rb").read()
h = np.frombuffer(raw[:1024], dtype="<i4")
assert h[0] == 20240326 and h[1] == 3, f"magic/version {h[0]} {h[1]}"
maxT, V, L, NH, C, Vp = (int(x) for x in h[2:8])
assert (V, L, NH, C, Vp, maxT) == (512, 2, 4, 64, 512, 64), h[:8]
kinds = [("ln_1.weight", (C,)), ("ln_1.bias", (C,)), ("attn.qkv.weight", (3 * C, C)),
         ("attn.qkv.bias", (3 * C,)), ("attn.proj.weight", (C, C)), ("attn.proj.bias", (C,)),
         ("ln_2.weight", (C,)), ("ln_2.bias", (C,)), ("mlp.fc.weight", (4 * C, C)),
         ("mlp.fc.bias", (4 * C,)), ("mlp.proj.weight", (C, 4 * C)), ("mlp.proj.bias", (C,))]
order = [("wte", (Vp, C)), ("wpe", (maxT, C))]
order += [(f"h.{l}.{k}", s) for k, s in kinds for l in range(L)]
order += [("ln_f.weight", (C,)), ("ln_f.bias", (C,))]
data = np.frombuffer(raw[1024:], dtype="<f4")
f = h5py.File(h5_path, "r")
off = 0
for name, shape in order:
    n = int(np.prod(shape))
    got = data[off:off + n].reshape(shape)
    want = f["/model/" + name][...]
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), f"{name} differs"
    off += n
assert off == data.size, f"{data.size - off} trailing floats"
print(f"{len(order)} tensors in llm.c order match bitwise")
EOF
[[ $? -eq 0 ]] && pass "llm.c layout: $(tail -1 "$WORK/layout.log")" \
  || { fail "llm.c layout"; cat "$WORK/layout.log"; }

"$ckpt" convert "$WORK/model.bin" "$WORK/back.h5" > "$WORK/c2.log" 2>&1 \
  && pass "convert llm.c -> HDF5" || { fail "convert .bin -> .h5"; cat "$WORK/c2.log"; }
h5diff "$src" "$WORK/back.h5" /model /model > "$WORK/diff.log" 2>&1 \
  && pass "HDF5 -> llm.c -> HDF5 is bitwise (h5diff /model: no differences)" \
  || { fail "round trip differs"; head "$WORK/diff.log"; }
out=$("$ckpt" verify "$WORK/back.h5" 2>&1) && pass "verify round-trip file: $out" \
  || fail "verify round-trip file: $out"

# ---- bf16 for serving ----
"$ckpt" convert "$src" "$WORK/serve.h5" --to bf16 > "$WORK/c3.log" 2>&1 \
  && pass "convert to bf16" || { fail "convert to bf16"; cat "$WORK/c3.log"; }
"$ckpt" inspect "$WORK/serve.h5" > "$WORK/serve.txt" 2>&1
grep -Eq '^ +/model/wte +\(512, 64\) +bfloat16 +65536 ' "$WORK/serve.txt" \
  && pass "bf16 file stores /model/wte as bfloat16, 2 bytes a number" \
  || { fail "bf16 inspect"; grep wte "$WORK/serve.txt"; }
grep -q '/optim' "$WORK/serve.txt" && fail "bf16 file holds optimizer state" \
  || pass "bf16 file holds no optimizer state"
out=$("$ckpt" verify "$WORK/serve.h5" 2>&1) && pass "verify bf16 file: $out" \
  || fail "verify bf16 file: $out"
toks=1,17,300,5,42,511,0,99
"$ckpt" logits "$src" --tokens $toks --out "$WORK/f32.logits" > /dev/null 2>&1 \
  && "$ckpt" logits "$WORK/serve.h5" --tokens $toks --out "$WORK/bf16.logits" > /dev/null 2>&1 \
  || fail "logits"
rel=$(/usr/bin/python3 -c "
import numpy as np
a = np.fromfile('$WORK/f32.logits', '<f4'); b = np.fromfile('$WORK/bf16.logits', '<f4')
assert a.size == 8 * 512 == b.size
print(f'{np.abs(a - b).max() / np.abs(a).max():.2e}')" 2>&1)
# bf16 keeps 8 significant bits (relative rounding 2^-9 = 2e-3 per weight).
awk -v r="$rel" 'BEGIN { exit !(r + 0 > 0 && r + 0 < 2e-2) }' \
  && pass "bf16 logits within $rel (relative to max |logit|) of float32, and not identical" \
  || fail "bf16 logits: relative difference '$rel'"
gen() { "$@" --prompt "ROMEO:" --max-tokens 12 --ignore-eot --greedy 2>&1; }
text=$(gen "$TESSERA_BIN/tessera-generate" "$WORK/serve.h5")
[[ "$text" == ROMEO:* && ${#text} -gt 8 ]] && pass "generates from bf16 file: ${text//$'\n'/ }" \
  || fail "generation from bf16: $text"
a=$(gen "$TESSERA_BIN/tessera-generate" "$src")
# An llm.c file carries no tokenizer: name the one the model was trained with.
b=$(gen "$TESSERA_BIN/tessera-generate" "$WORK/back.h5" --tokenizer "$WORK/data/tokenizer")
[[ "$a" == "$b" ]] && pass "round-trip file generates the same text as the original" \
  || fail "round-trip generation differs: [$a] [$b]"

# ---- dropping optimizer state ----
"$ckpt" convert "$src" "$WORK/weights.h5" --drop-optimizer > /dev/null 2>&1 \
  && [[ $(stat -c %s "$WORK/weights.h5") -lt $(($(stat -c %s "$src") / 2)) ]] \
  && pass "--drop-optimizer: $(stat -c %s "$WORK/weights.h5") bytes (from $(stat -c %s "$src"))" \
  || fail "--drop-optimizer"
expect_error "resume from a weights-only file" "no optimizer state.*train.init_from" \
  "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set train.steps=6 \
  --set checkpoint.resume="$WORK/weights.h5"

# ---- bad input ----
# Flip 64 bytes inside a model tensor (its file offset from h5py): every conversion reads it.
offset=$(/usr/bin/python3 -c "
import h5py; print(h5py.File('$src', 'r')['/model/h.1.mlp.fc.weight'].id.get_offset() + 1000)")
cp "$src" "$WORK/corrupt.h5"
head -c 64 /dev/urandom | dd of="$WORK/corrupt.h5" bs=1 seek="$offset" count=64 \
  conv=notrunc status=none
expect_error "corrupt input" "dataset /model/h.1.mlp.fc.weight checksum mismatch" \
  "$ckpt" convert "$WORK/corrupt.h5" "$WORK/x.bin"
[[ ! -e "$WORK/x.bin" && ! -e "$WORK/x.bin.tmp" ]] && pass "no output left by the failed convert" \
  || fail "a failed convert left $(ls "$WORK"/x.bin*)"
head -c $(($(stat -c %s "$WORK/model.bin") - 100)) "$WORK/model.bin" > "$WORK/short.bin"
expect_error "truncated llm.c file" "short.bin.*holds [0-9]+ bytes; its header describes" \
  "$ckpt" convert "$WORK/short.bin" "$WORK/y.h5"
head -c 4096 /dev/urandom > "$WORK/noise.bin"
expect_error "foreign file" "neither an HDF5 file.*an llm.c .*nor a safetensors file" \
  "$ckpt" convert "$WORK/noise.bin" "$WORK/z.h5"
expect_error "existing output" "output '.*back.h5' exists.*--force" \
  "$ckpt" convert "$WORK/model.bin" "$WORK/back.h5"
expect_error "bad --to" "--to 'fp8' is not a target; use hdf5, bf16, llmc or safetensors" \
  "$ckpt" convert "$src" "$WORK/w.h5" --to fp8
finish
