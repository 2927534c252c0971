#!/usr/bin/env bash
# tessera-ckpt convert: HDF5 -> llm.c .bin (layout checked by an independent numpy reader of
# llm.c's format) -> HDF5 is bitwise, with V = Vp = 512 and with V 300 padded to Vp 384 (padding
# rows zero in the .bin); bf16 for serving loads, generates and stays near float32;
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

# ---- vocabulary padding (V < Vp, as GPT-2's 50257 rows padded to 50304) ----
# The run above has V = Vp = 512 (no padding rows). Here a 300-token vocabulary padded to 384,
# trained on tp=2 (rank 1's shard holds real rows 192-299 and the 84 padding rows): llm.c's header
# says V 300, Vp 384, its wte has 384 rows of which the last 84 are zero and the others are the
# checkpoint's bitwise, and converting back gives /model bitwise with V 300 and Vp 384 again.
"$TESSERA_BIN/tessera-data" prepare --input "$WORK/small.txt" --vocab-size 300 \
  --out-dir "$WORK/data300" > "$WORK/prep300.log" 2>&1 || { fail "prepare V=300"; cat "$WORK/prep300.log"; }
mpirun --oversubscribe --bind-to none -n 2 "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets \
  --set model.vocab_size=300 --set data.train="$WORK/data300/train.bin" \
  --set data.val="$WORK/data300/val.bin" --set data.tokenizer="$WORK/data300/tokenizer" \
  --set train.out_dir="$WORK/run300" --set parallel.tp=2 --set train.steps=2 \
  --set train.val_every=0 --set checkpoint.dir="$WORK/ck300" --set checkpoint.every=2 \
  > "$WORK/train300.log" 2>&1 || { fail "training run V=300"; tail -5 "$WORK/train300.log"; }
src300="$WORK/ck300/$(cat "$WORK/ck300/latest" 2>/dev/null)"
"$ckpt" convert "$src300" "$WORK/p300.bin" > "$WORK/c300.log" 2>&1 \
  && "$ckpt" convert "$WORK/p300.bin" "$WORK/p300.h5" >> "$WORK/c300.log" 2>&1 \
  || { fail "convert V=300"; cat "$WORK/c300.log"; }
/usr/bin/python3 - "$WORK/p300.bin" "$src300" > "$WORK/pad.log" 2>&1 <<'EOF'
import sys
import h5py, numpy as np
bin_path, h5_path = sys.argv[1:]
raw = open(bin_path, "rb").read()
h = np.frombuffer(raw[:1024], dtype="<i4")
maxT, V, L, NH, C, Vp = (int(x) for x in h[2:8])
assert (V, Vp, C) == (300, 384, 64), f"header V {V}, Vp {Vp}, C {C}"
wte = np.frombuffer(raw[1024:1024 + 4 * Vp * C], dtype="<f4").reshape(Vp, C)
with h5py.File(h5_path, "r") as f:
    want = f["/model/wte"][...]
assert want.shape == (384, 64), want.shape
assert np.array_equal(wte.view(np.uint32), want.view(np.uint32)), "wte differs from the checkpoint"
assert not wte[V:].any(), "padding rows of the .bin are not zero"
assert wte[:V].any(axis=1).all(), "a real row is all zero"
print(f"llm.c header V {V} Vp {Vp}; wte rows {V}-{Vp - 1} zero, rows 0-{V - 1} bitwise")
EOF
[[ $? -eq 0 ]] && pass "padded vocabulary: $(tail -1 "$WORK/pad.log")" \
  || { fail "padded vocabulary in the llm.c file"; cat "$WORK/pad.log"; }
h5diff "$src300" "$WORK/p300.h5" /model /model > "$WORK/diff300.log" 2>&1 \
  && pass "V=300, Vp=384: HDF5 -> llm.c -> HDF5 is bitwise (h5diff /model)" \
  || { fail "V=300 round trip differs"; head "$WORK/diff300.log"; }
"$ckpt" inspect "$WORK/p300.h5" > "$WORK/inspect300.txt" 2>&1
grep -Eq 'vocab_size: 300$' "$WORK/inspect300.txt" \
  && grep -Eq '^ +/model/wte +\(384, 64\) ' "$WORK/inspect300.txt" \
  && pass "converted back: vocab_size 300, /model/wte (384, 64)" \
  || { fail "converted back V=300"; grep -E 'vocab|wte' "$WORK/inspect300.txt"; }

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
