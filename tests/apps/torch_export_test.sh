#!/usr/bin/env bash
# PyTorch export: a checkpoint written on a 2-rank grid (tp = 2) exports with ckpt_to_torch.py to
# a Hugging Face GPT-2 state_dict, which loads into scripts/torch_gpt2.py (strict key check) and
# gives tessera-ckpt's logits to relative 1e-5, from float32 and from bf16 checkpoints. The checker
# fails on logits of another step, on a transposed weight, on a missing and on an extra tensor.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
PY=/usr/bin/python3
make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")
ck="$WORK/ckpt"

# vocab 520 pads to Vp 640, so the export must drop wte's padding rows.
mpirun --oversubscribe --bind-to none -n 2 "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets \
  --set model.vocab_size=520 --set parallel.tp=2 --set train.steps=4 --set train.val_every=0 \
  --set checkpoint.dir="$ck" --set checkpoint.every=2 > "$WORK/train.log" 2>&1 \
  || { fail "training run failed"; tail -5 "$WORK/train.log"; }
s2="$ck/step_00000002.h5" s4="$ck/step_00000004.h5"
[[ -f "$s2" && -f "$s4" ]] && pass "trained at tp 2; checkpoints at steps 2 and 4" \
  || fail "missing checkpoints: $(ls "$ck" 2>&1)"

out=$($PY scripts/ckpt_to_torch.py "$s4" "$WORK/gpt2.pt" 2>&1) && [[ -f "$WORK/gpt2.json" ]] \
  && pass "export: $out" || fail "export failed: $out"

# Hugging Face names and layouts, checked against the HDF5 file directly (not through the
# checker); then faulty copies of the export for the checker to reject: a transposed square
# weight, a missing tensor, an extra tensor. Prints the file offset of a dataset to corrupt.
out=$($PY - "$s4" "$WORK/gpt2.pt" "$WORK" <<'PY' 2>&1
import json, shutil, sys
import h5py, torch
f, sd = h5py.File(sys.argv[1], "r"), torch.load(sys.argv[2])
work = sys.argv[3]
cfg = json.load(open(f"{work}/gpt2.json"))
C, V, L = 64, 520, 2
assert len(sd) == 4 + 12 * L + 1, sorted(sd)
assert tuple(sd["transformer.wte.weight"].shape) == (V, C)
assert sd["lm_head.weight"].data_ptr() == sd["transformer.wte.weight"].data_ptr()
for l in range(L):
    h = f"transformer.h.{l}."
    for hf, shape in (("attn.c_attn.weight", (C, 3 * C)), ("attn.c_proj.weight", (C, C)),
                      ("mlp.c_fc.weight", (C, 4 * C)), ("mlp.c_proj.weight", (4 * C, C))):
        assert tuple(sd[h + hf].shape) == shape, (h + hf, tuple(sd[h + hf].shape))
    # Conv1D (in, out) is the transpose of Tessera's (out, in); square, so only values tell.
    assert torch.equal(sd[h + "attn.c_proj.weight"],
                       torch.from_numpy(f[f"model/h.{l}.attn.proj.weight"][...]).t())
    assert torch.equal(sd[h + "attn.c_attn.bias"],
                       torch.from_numpy(f[f"model/h.{l}.attn.qkv.bias"][...]))
assert torch.equal(sd["transformer.wte.weight"], torch.from_numpy(f["model/wte"][:V]))
assert (cfg["n_layer"], cfg["n_head"], cfg["n_embd"]) == (L, 4, C)
assert (cfg["n_positions"], cfg["vocab_size"]) == (64, V)
assert cfg["layer_norm_epsilon"] == 1e-5 and cfg["activation_function"] == "gelu_new"

def save(name, d):
    torch.save(d, f"{work}/{name}.pt")
    shutil.copy(f"{work}/gpt2.json", f"{work}/{name}.json")
w = "transformer.h.1.attn.c_proj.weight"
save("transposed", {**sd, w: sd[w].t().contiguous()})
save("missing", {k: t for k, t in sd.items() if k != "transformer.h.0.ln_2.bias"})
save("extra", {**sd, "transformer.h.2.ln_1.weight": sd["transformer.h.0.ln_1.weight"]})
print(f["model/h.1.mlp.fc.weight"].id.get_offset())
PY
)
[[ $? -eq 0 ]] && pass "Hugging Face names, Conv1D transposes, tied lm_head, unpadded wte, config" \
  || fail "exported layout: $out"
fc_offset=$out

# 24 tokens including the highest real id (519), single rank.
tokens=0,519,17,3,250,250,9,400,1,77,123,511,2,2,2,64,300,45,6,99,128,500,31,8
logits() {
  "$TESSERA_BIN/tessera-ckpt" logits "$1" --tokens "$tokens" --out "$2" > "$WORK/logits.log" 2>&1 \
    || { fail "tessera-ckpt logits $1"; cat "$WORK/logits.log"; }
}
logits "$s4" "$WORK/l4.f32"
logits "$s2" "$WORK/l2.f32"
check() { $PY scripts/check_torch_export.py "$@" 2>&1; }

out=$(check "$WORK/gpt2.pt" "$tokens" "$WORK/l4.f32") \
  && pass "torch_gpt2 on the export = Tessera's logits: $out" || fail "export vs Tessera: $out"

out=$(check "$WORK/gpt2.pt" "$tokens" "$WORK/l2.f32")
[[ $? -ne 0 && "$out" == FAIL:* ]] && pass "checker rejects logits of step 2: $out" \
  || fail "checker accepted logits of another checkpoint: $out"

out=$(check "$WORK/transposed.pt" "$tokens" "$WORK/l4.f32")
[[ $? -ne 0 && "$out" == FAIL:* ]] && pass "checker rejects a transposed c_proj: $out" \
  || fail "checker accepted a transposed c_proj: $out"
out=$(check "$WORK/missing.pt" "$tokens" "$WORK/l4.f32")
[[ $? -ne 0 && "$out" == *"has no transformer.h.0.ln_2.bias"* ]] \
  && pass "checker rejects a missing tensor: $out" \
  || fail "checker accepted a missing tensor: $out"
out=$(check "$WORK/extra.pt" "$tokens" "$WORK/l4.f32")
[[ $? -ne 0 && "$out" == *"transformer.h.2.ln_1.weight"* ]] \
  && pass "checker rejects an extra tensor: $out" \
  || fail "checker accepted an extra tensor: $out"

# bfloat16 serving checkpoint: the export widens it exactly, so it matches Tessera's logits too.
"$TESSERA_BIN/tessera-ckpt" convert "$s4" "$WORK/bf16.h5" --to bf16 > "$WORK/convert.log" 2>&1 \
  || { fail "convert --to bf16"; cat "$WORK/convert.log"; }
out=$($PY scripts/ckpt_to_torch.py "$WORK/bf16.h5" "$WORK/bf16.pt" 2>&1) || fail "bf16 export: $out"
logits "$WORK/bf16.h5" "$WORK/lb.f32"
out=$(check "$WORK/bf16.pt" "$tokens" "$WORK/lb.f32") \
  && pass "bf16 checkpoint: export = Tessera's logits: $out" || fail "bf16 export vs Tessera: $out"

# A corrupt dataset: the export verifies checksums and names it.
cp "$s4" "$WORK/corrupt.h5"
printf '\x55\x66\x77\x88' | dd of="$WORK/corrupt.h5" bs=1 seek=$((fc_offset + 100)) conv=notrunc \
  status=none
expect_error "export a corrupt checkpoint" "/model/h.1.mlp.fc.weight checksum mismatch" \
  $PY scripts/ckpt_to_torch.py "$WORK/corrupt.h5" "$WORK/corrupt.pt"
finish
