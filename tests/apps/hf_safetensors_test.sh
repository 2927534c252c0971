#!/usr/bin/env bash
# Hugging Face interchange: a checkpoint written at tp 2 (vocab 520, padded to 640) exports with
# `tessera-ckpt convert --to safetensors` to model.safetensors + config.json + the tokenizer; an
# independent reader (json + numpy) finds Hugging Face's names, Conv1D orientation and 520 wte
# rows, and torch_gpt2 on those tensors gives Tessera's logits to 1e-5 (and not another step's);
# HF -> HDF5 is bitwise; BF16 export equals --to bf16; a GPT2Model-named file with lm_head and
# mask buffers and an F16 file import; train.init_from of the directory fine-tunes with exactly
# the losses of the same weights imported as HDF5, far below a fresh model's; bad files and
# configs each fail with a one-line error naming the file, the tensor or key, and the fix.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
PY=/usr/bin/python3
make_small_data "$WORK/data"
sets="$(small_sets "$WORK/data") --set model.vocab_size=520"
ck="$WORK/ckpt"
ckpt="$TESSERA_BIN/tessera-ckpt"
train="$TESSERA_BIN/tessera-train"
mpi2() { timeout 120 mpirun --oversubscribe --bind-to none -n 2 "$@"; }
field() {
  $PY -c "import json, sys; print(json.loads(open(sys.argv[1]).readlines()[int(sys.argv[2]) - 1])[sys.argv[3]])" "$@"
}

mpi2 "$train" configs/tiny.yaml $sets --set parallel.tp=2 --set train.steps=40 \
  --set train.val_every=0 --set optim.warmup_steps=5 --set checkpoint.dir="$ck" \
  --set checkpoint.every=20 > "$WORK/train.log" 2>&1 || { fail "training run"; tail -5 "$WORK/train.log"; }
s20="$ck/step_00000020.h5" s40="$ck/step_00000040.h5"
[[ -f "$s20" && -f "$s40" ]] && pass "trained 40 steps at tp 2; checkpoints at 20 and 40" \
  || fail "missing checkpoints: $(ls "$ck" 2>&1)"

# ---- export ----
out=$("$ckpt" convert "$s40" "$WORK/hf/" 2>&1) && pass "export: $out" || fail "export: $out"
for f in model.safetensors config.json vocab.json merges.txt; do
  [[ -f "$WORK/hf/$f" ]] || fail "export wrote no $f"
done
cmp -s "$WORK/hf/vocab.json" "$WORK/data/tokenizer.vocab.json" \
  && cmp -s "$WORK/hf/merges.txt" "$WORK/data/tokenizer.merges.txt" \
  && pass "the tokenizer's vocab.json and merges.txt travel with the weights" \
  || fail "tokenizer files not copied verbatim"
compgen -G "$WORK/hf/*.tmp" > /dev/null && fail "a .tmp file was left in the export" || true

# An independent reader of the format (json + numpy) and of Hugging Face's GPT-2 layout. With an
# HDF5 file: every tensor must equal the checkpoint's (Conv1D weights its transpose, wte its first
# vocab_size rows) bitwise. With a logits file: torch_gpt2 loaded from the safetensors tensors
# must give those logits to relative 1e-5 (max |diff| / max |logit|).
cat > "$WORK/hf_check.py" <<'PY'
import json, os, struct, sys
import numpy as np

def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        if e["dtype"] == "BF16":
            words = np.frombuffer(data[b:end], dtype="<u2")
            a = (words.astype(np.uint32) << np.uint32(16)).view(np.float32)
        else:
            a = np.frombuffer(data[b:end], dtype={"F32": "<f4", "F16": "<f2"}[e["dtype"]])
        out[name] = (e["dtype"], a.astype(np.float32).reshape(e["shape"]))
    return out, meta

KINDS = [("ln_1.weight", "ln_1.weight", False), ("ln_1.bias", "ln_1.bias", False),
         ("attn.c_attn.weight", "attn.qkv.weight", True), ("attn.c_attn.bias", "attn.qkv.bias", False),
         ("attn.c_proj.weight", "attn.proj.weight", True), ("attn.c_proj.bias", "attn.proj.bias", False),
         ("ln_2.weight", "ln_2.weight", False), ("ln_2.bias", "ln_2.bias", False),
         ("mlp.c_fc.weight", "mlp.fc.weight", True), ("mlp.c_fc.bias", "mlp.fc.bias", False),
         ("mlp.c_proj.weight", "mlp.proj.weight", True), ("mlp.c_proj.bias", "mlp.proj.bias", False)]

def name_map(L):
    """Hugging Face name -> (Tessera / torch_gpt2 name, transposed)."""
    m = {"transformer.wte.weight": ("wte", False), "transformer.wpe.weight": ("wpe", False),
         "transformer.ln_f.weight": ("ln_f.weight", False), "transformer.ln_f.bias": ("ln_f.bias", False)}
    for l in range(L):
        for hf, t, tr in KINDS:
            m[f"transformer.h.{l}.{hf}"] = (f"h.{l}.{t}", tr)
    return m

mode, hf_dir = sys.argv[1], sys.argv[2]
cfg = json.load(open(os.path.join(hf_dir, "config.json")))
tensors, meta = read_safetensors(os.path.join(hf_dir, "model.safetensors"))
V, C, L = cfg["vocab_size"], cfg["n_embd"], cfg["n_layer"]
names = name_map(L)
if mode == "layout":
    import h5py
    f = h5py.File(sys.argv[3], "r")
    want_dtype = sys.argv[4]
    assert meta.get("format") == "pt", meta
    assert set(tensors) == set(names), sorted(set(tensors) ^ set(names))
    assert (V, C, L, cfg["n_head"], cfg["n_positions"]) == (520, 64, 2, 4, 64), cfg
    assert cfg["model_type"] == "gpt2" and cfg["architectures"] == ["GPT2LMHeadModel"]
    assert cfg["activation_function"] == "gelu_new" and cfg["layer_norm_epsilon"] == 1e-5
    assert cfg["tie_word_embeddings"] is True and cfg["eos_token_id"] == 511, cfg
    assert tensors["transformer.h.0.attn.c_attn.weight"][1].shape == (C, 3 * C)
    assert tensors["transformer.h.1.mlp.c_proj.weight"][1].shape == (4 * C, C)
    assert f["model/wte"].shape == (640, C) and tensors["transformer.wte.weight"][1].shape == (V, C)
    for hf, (t, tr) in names.items():
        dtype, got = tensors[hf]
        assert dtype == want_dtype, (hf, dtype)
        want = f["model/" + t][...]
        want = want.T if tr else want[:V] if t == "wte" else want
        if want_dtype == "BF16":  # rounded to nearest even, as Tessera's bf16 checkpoint
            bits = want.view(np.uint32).astype(np.uint64)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
            want = bits.astype(np.uint32).view(np.float32)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), f"{hf} differs from /model/{t}"
    print(f"{len(names)} tensors ({want_dtype}) with Hugging Face names equal the checkpoint's bitwise")
else:  # logits
    import torch
    sys.path.insert(0, os.path.join(os.environ["TESSERA_ROOT"], "scripts"))
    from torch_gpt2 import GPT, GPTConfig
    tokens = [int(t) for t in sys.argv[3].split(",")]
    want = np.fromfile(sys.argv[4], dtype="<f4").reshape(len(tokens), V)
    model = GPT(GPTConfig(V=V, pad=1, maxT=cfg["n_positions"], L=L, NH=cfg["n_head"], C=C))
    params = model.named_params()
    assert set(tensors) == set(names), sorted(set(tensors) ^ set(names))
    with torch.no_grad():
        for hf, (t, tr) in names.items():
            a = tensors[hf][1]
            params[t].copy_(torch.from_numpy(np.ascontiguousarray(a.T if tr else a)))
        logits, _ = model(torch.tensor([tokens]))
    got = logits[0].numpy()
    rel = float(np.max(np.abs(got - want)) / np.max(np.abs(got)))
    if rel > 1e-5:
        print(f"FAIL: relative error {rel:.3e} > 1e-5")
        sys.exit(1)
    print(f"relative error {rel:.2e} <= 1e-5")
PY
out=$($PY "$WORK/hf_check.py" layout "$WORK/hf" "$s40" F32 2>&1) && pass "layout: $out" \
  || fail "layout: $out"

tokens=0,519,17,3,250,250,9,400,1,77,123,511,2,2,2,64,300,45,6,99,128,500,31,8
"$ckpt" logits "$s40" --tokens $tokens --out "$WORK/l40.f32" > /dev/null 2>&1 \
  && "$ckpt" logits "$s20" --tokens $tokens --out "$WORK/l20.f32" > /dev/null 2>&1 \
  || fail "tessera-ckpt logits"
out=$($PY "$WORK/hf_check.py" logits "$WORK/hf" $tokens "$WORK/l40.f32" 2>&1) \
  && pass "torch_gpt2 on the safetensors = Tessera's logits: $out" || fail "logits: $out"
out=$($PY "$WORK/hf_check.py" logits "$WORK/hf" $tokens "$WORK/l20.f32" 2>&1)
[[ $? -ne 0 && "$out" == FAIL:* ]] && pass "the checker rejects step 20's logits: $out" \
  || fail "the checker accepted another step's logits: $out"

# ---- import: HF -> HDF5 is bitwise (the directory, and the .safetensors file) ----
out=$("$ckpt" convert "$WORK/hf" "$WORK/back.h5" 2>&1) && pass "import: $out" || fail "import: $out"
h5diff "$s40" "$WORK/back.h5" /model /model > "$WORK/diff.log" 2>&1 \
  && pass "HDF5 -> safetensors -> HDF5 is bitwise (h5diff /model)" \
  || { fail "round trip differs"; head "$WORK/diff.log"; }
out=$("$ckpt" verify "$WORK/back.h5" 2>&1) && pass "verify: $out" || fail "verify: $out"
stored=$("$ckpt" inspect "$WORK/back.h5" 2>&1 | grep 'tokenizer:')
cmp -s "$WORK/back.vocab.json" "$WORK/data/tokenizer.vocab.json" \
  && cmp -s "$WORK/back.merges.txt" "$WORK/data/tokenizer.merges.txt" \
  && [[ "$stored" == *"tokenizer: \"$WORK/back\""* ]] \
  && pass "import copies the tokenizer beside the checkpoint and data.tokenizer names it" \
  || fail "import tokenizer: $stored"
"$ckpt" convert "$WORK/hf/model.safetensors" "$WORK/back2.h5" > /dev/null 2>&1 \
  && h5diff "$s40" "$WORK/back2.h5" /model /model > /dev/null 2>&1 \
  && pass "a .safetensors file with config.json beside it imports bitwise too" \
  || fail "import of the .safetensors file"

# ---- BF16 export: the values of Tessera's own bf16 rounding ----
out=$("$ckpt" convert "$s40" "$WORK/hfb/model.safetensors" --dtype bf16 2>&1)
[[ $? -ne 0 && "$out" == *"output directory '$WORK/hfb' does not exist"* ]] \
  && pass "a .safetensors output in a missing directory is refused" || fail "missing dir: $out"
mkdir "$WORK/hfb"
"$ckpt" convert "$s40" "$WORK/hfb/model.safetensors" --dtype bf16 > /dev/null 2>&1 \
  || fail "convert --dtype bf16"
out=$($PY "$WORK/hf_check.py" layout "$WORK/hfb" "$s40" BF16 2>&1) && pass "bf16 layout: $out" \
  || fail "bf16 layout: $out"
grep -q '"torch_dtype": "bfloat16"' "$WORK/hfb/config.json" || fail "bf16 config.json dtype"
"$ckpt" convert "$WORK/hfb" "$WORK/bf16-back.h5" > /dev/null 2>&1 \
  && "$ckpt" convert "$s40" "$WORK/bf16.h5" --to bf16 > /dev/null 2>&1 \
  && "$ckpt" logits "$WORK/bf16-back.h5" --tokens $tokens --out "$WORK/lb1.f32" > /dev/null 2>&1 \
  && "$ckpt" logits "$WORK/bf16.h5" --tokens $tokens --out "$WORK/lb2.f32" > /dev/null 2>&1 \
  && cmp -s "$WORK/lb1.f32" "$WORK/lb2.f32" && ! cmp -s "$WORK/lb1.f32" "$WORK/l40.f32" \
  && pass "BF16 safetensors -> HDF5 gives the logits of --to bf16 bitwise (not float32's)" \
  || fail "bf16 safetensors round trip"

# ---- files as other tools write them ----
# Variants of the export written by a small Python writer: GPT2Model names (no "transformer."),
# with lm_head.weight and the old attention-mask buffers, no Tessera metadata; F16; and broken.
sed -n '/^def read_safetensors/,/^    return out, meta/p' "$WORK/hf_check.py" > "$WORK/reader.py"
cat > "$WORK/variants.py" <<'PY'
import json, os, shutil, struct, sys
import numpy as np
exec(open(os.path.join(os.path.dirname(sys.argv[0]), "reader.py")).read())

def write(dir_, tensors, meta, cfg):
    os.makedirs(dir_, exist_ok=True)
    header, blobs, off = {}, [], 0
    for name, (dtype, a) in tensors.items():
        b = np.ascontiguousarray(a.astype({"F32": "<f4", "F16": "<f2"}[dtype])).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if meta is not None:
        header["__metadata__"] = meta
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(dir_, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    json.dump(cfg, open(os.path.join(dir_, "config.json"), "w"))

src, work = sys.argv[1], sys.argv[2]
t, _ = read_safetensors(os.path.join(src, "model.safetensors"))
cfg = json.load(open(os.path.join(src, "config.json")))
T = cfg["n_positions"]
base = {k[len("transformer."):]: v for k, v in t.items()}
base["lm_head.weight"] = t["transformer.wte.weight"]
for l in range(cfg["n_layer"]):
    base[f"h.{l}.attn.bias"] = ("F32", np.tril(np.ones((T, T), np.float32)).reshape(1, 1, T, T))
    base[f"h.{l}.attn.masked_bias"] = ("F32", np.array(-1e4, np.float32))
write(f"{work}/gpt2model", base, {"format": "pt"}, cfg)
write(f"{work}/f16", {k: ("F16", v[1]) for k, v in t.items()}, None, cfg)
untied = dict(base)
head = base["lm_head.weight"][1].copy()
head[3, 5] += 1
untied["lm_head.weight"] = ("F32", head)
write(f"{work}/untied", untied, {"format": "pt"}, cfg)
write(f"{work}/missing", {k: v for k, v in t.items() if k != "transformer.h.1.ln_2.bias"}, None, cfg)
fc = "transformer.h.0.mlp.c_fc.weight"
write(f"{work}/shape", {**t, fc: ("F32", np.ascontiguousarray(t[fc][1].T))}, None, cfg)
write(f"{work}/relu", t, None, {**cfg, "activation_function": "relu"})
write(f"{work}/deeper", t, None, {**cfg, "n_layer": 3})
write(f"{work}/shallower", t, None, {**cfg, "n_layer": 1})
print("variants written")
PY
out=$($PY "$WORK/variants.py" "$WORK/hf" "$WORK" 2>&1) || fail "writing variants: $out"
"$ckpt" convert "$WORK/gpt2model" "$WORK/gpt2model.h5" > /dev/null 2>&1 \
  && h5diff "$s40" "$WORK/gpt2model.h5" /model /model > /dev/null 2>&1 \
  && pass "GPT2Model names, lm_head.weight and mask buffers, no Tessera metadata: imports bitwise (pad_vocab_to 128 by default)" \
  || fail "GPT2Model-named import"
"$ckpt" convert "$WORK/f16" "$WORK/f16.h5" > /dev/null 2>&1 || fail "F16 import"
out=$($PY - "$s40" "$WORK/f16.h5" <<'PY' 2>&1
import sys
import h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r")["model"], h5py.File(sys.argv[2], "r")["model"]
assert sorted(a) == sorted(b)
for k in a:
    assert np.array_equal(a[k][...].astype(np.float16).astype(np.float32), b[k][...]), k
print(f"{len(a)} datasets equal the checkpoint's rounded to float16")
PY
) && pass "F16 import: $out" || fail "F16 import: $out"

expect_error "lm_head differs from wte" \
  "'$WORK/untied/model.safetensors': lm_head.weight differs from wte.weight \(first at flat index 197\).*tied" \
  "$ckpt" convert "$WORK/untied" "$WORK/x.h5"
expect_error "missing tensor" \
  "'$WORK/missing/model.safetensors': has no tensor 'transformer.h.1.ln_2.bias'" \
  "$ckpt" convert "$WORK/missing" "$WORK/x.h5"
expect_error "wrong shape" \
  "tensor 'transformer.h.0.mlp.c_fc.weight' has shape \(256, 64\), .*config.json implies \(64, 256\)" \
  "$ckpt" convert "$WORK/shape" "$WORK/x.h5"
expect_error "config.json with more layers than the weights" \
  "has no tensor 'transformer.h.2.ln_1.weight'" \
  "$ckpt" convert "$WORK/deeper" "$WORK/x.h5"
expect_error "a tensor the model does not have" \
  "holds tensor 'transformer.h.1.attn.c_attn.bias', which a GPT-2 of .*config.json's sizes \(n_layer 1\) does not have" \
  "$ckpt" convert "$WORK/shallower" "$WORK/x.h5"
expect_error "activation other than gelu_new" \
  "config.json': activation_function is 'relu'; Tessera's GELU is the tanh approximation" \
  "$ckpt" convert "$WORK/relu" "$WORK/x.h5"
mkdir "$WORK/noconfig" && cp "$WORK/hf/model.safetensors" "$WORK/noconfig/"
expect_error "no config.json" \
  "'$WORK/noconfig/config.json': not found; a model directory needs config.json" \
  "$ckpt" convert "$WORK/noconfig" "$WORK/x.h5"
mkdir "$WORK/trunc" && cp "$WORK/hf/config.json" "$WORK/trunc/"
head -c -100 "$WORK/hf/model.safetensors" > "$WORK/trunc/model.safetensors"
expect_error "truncated file" \
  "'$WORK/trunc/model.safetensors': tensor '.*' has data_offsets \[.*\] ending past the .* data bytes the file holds: the file is truncated" \
  "$ckpt" convert "$WORK/trunc" "$WORK/x.h5"
mkdir "$WORK/sharded" && touch "$WORK/sharded/model.safetensors.index.json"
expect_error "sharded model" "has no model.safetensors \(it is sharded" \
  "$ckpt" convert "$WORK/sharded" "$WORK/x.h5"
[[ ! -e "$WORK/x.h5" && ! -e "$WORK/x.h5.tmp" ]] && pass "failed imports leave no output" \
  || fail "a failed import left $(ls "$WORK"/x.h5*)"
expect_error "existing export without --force" "output '$WORK/hf/model.safetensors' exists; .*--force" \
  "$ckpt" convert "$s40" "$WORK/hf" --to safetensors
expect_error "--dtype for HDF5" "--dtype 'bf16' applies to --to safetensors only" \
  "$ckpt" convert "$s40" "$WORK/y.h5" --dtype bf16

# ---- train.init_from a Hugging Face directory, on tp 2 ----
ft="$sets --set parallel.tp=2 --set train.val_every=0 --set optim.warmup_steps=5 \
  --set train.log_every=1 --set train.steps=3"
mpi2 "$train" configs/tiny.yaml $ft --set train.out_dir="$WORK/ft-hf" \
  --set train.init_from="$WORK/hf" > "$WORK/ft-hf.log" 2>&1 \
  && grep -q "^initialised weights from $WORK/hf (Hugging Face GPT-2)\$" "$WORK/ft-hf.log" \
  && pass "init_from the Hugging Face directory on 1x2: $(grep '^initialised' "$WORK/ft-hf.log")" \
  || { fail "init_from the Hugging Face directory"; tail -5 "$WORK/ft-hf.log"; }
mpi2 "$train" configs/tiny.yaml $ft --set train.out_dir="$WORK/ft-h5" \
  --set train.init_from="$WORK/back.h5" > "$WORK/ft-h5.log" 2>&1 || fail "init_from back.h5"
mpi2 "$train" configs/tiny.yaml $ft --set train.out_dir="$WORK/ft-fresh" > /dev/null 2>&1 \
  || fail "fresh run"
hf_losses=$(for i in 1 2 3; do field "$WORK/ft-hf/metrics.jsonl" $i loss; done | tr '\n' ' ')
h5_losses=$(for i in 1 2 3; do field "$WORK/ft-h5/metrics.jsonl" $i loss; done | tr '\n' ' ')
fresh=$(field "$WORK/ft-fresh/metrics.jsonl" 1 loss)
[[ -n "$hf_losses" && "$hf_losses" == "$h5_losses" ]] \
  && pass "fine-tuning losses from the directory = from the same weights as HDF5: $hf_losses" \
  || fail "losses differ: HF $hf_losses, HDF5 $h5_losses"
first=${hf_losses%% *}
awk -v f="$first" -v z="$fresh" 'BEGIN { exit !(f + 0 > 0 && f + 0.5 < z + 0) }' \
  && pass "first fine-tuning loss $first, a fresh model's $fresh" \
  || fail "first fine-tuning loss '$first' is not well below a fresh model's $fresh"
out=$(mpi2 "$train" configs/tiny.yaml $sets --set parallel.tp=2 --set model.n_embd=32 \
  --set train.init_from="$WORK/hf" 2>&1)
rc=$?
msg="train.init_from: Hugging Face model '$WORK/hf' does not fit this model (model.n_embd 64 in the Hugging Face model, 32 in this model); set those model keys"
# Each rank's line, or one line for all when every rank failed alike.
n=$(grep -cF "$msg" <<< "$out")
grep -qF "[all 2 ranks] tessera-train: $msg" <<< "$out" && n=2
[[ $rc -ne 0 && $rc -ne 124 && $n -eq 2 ]] \
  && pass "init_from of another shape on 1x2: exit $rc, both ranks name the key" \
  || fail "init_from of another shape: exit $rc, $n ranks: $out"
expect_error "init_from a truncated file" \
  "train.init_from: safetensors file '$WORK/trunc/model.safetensors': .* truncated" \
  "$train" configs/tiny.yaml $sets --set train.init_from="$WORK/trunc"
finish
