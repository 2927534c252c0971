#!/usr/bin/python3
"""Checks a Hugging Face-named GPT-2 state_dict written by ckpt_to_torch.py against Tessera: maps
the names back to scripts/torch_gpt2.py's (Tessera's ParamSpec names), transposing the Conv1D
weights and padding wte with zero rows to the padded vocabulary, loads them with a strict key
check (every tensor used, none missing), runs the forward pass in float32 on the tokens and
compares the logits with Tessera's (`tessera-ckpt logits`: float32 little-endian, (T, vocab_size)).

  /usr/bin/python3 scripts/check_torch_export.py gpt2.pt 5,17,2,99 tessera_logits.f32 [--tol 1e-5]

The relative error is max|torch - tessera| / max|torch| over all T x V logits (a norm-wise
relative error: one scale for the whole tensor, so logits near zero do not inflate it). Prints
it and exits 0 when it is at most --tol, 1 otherwise (or on any mapping/loading problem).
"""

import argparse
import json
import os
import sys
from collections import OrderedDict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt2 import GPT, GPTConfig  # noqa: E402


class CheckError(Exception):
    """A problem with the inputs, reported as one line."""


def name_map(L: int) -> "OrderedDict[str, tuple]":
    """Hugging Face name -> (torch_gpt2 name, transposed). wte and lm_head are handled apart."""
    out = OrderedDict()
    out["transformer.wpe.weight"] = ("wpe", False)
    for l in range(L):
        hf, t = f"transformer.h.{l}.", f"h.{l}."
        out[hf + "ln_1.weight"] = (t + "ln_1.weight", False)
        out[hf + "ln_1.bias"] = (t + "ln_1.bias", False)
        out[hf + "attn.c_attn.weight"] = (t + "attn.qkv.weight", True)
        out[hf + "attn.c_attn.bias"] = (t + "attn.qkv.bias", False)
        out[hf + "attn.c_proj.weight"] = (t + "attn.proj.weight", True)
        out[hf + "attn.c_proj.bias"] = (t + "attn.proj.bias", False)
        out[hf + "ln_2.weight"] = (t + "ln_2.weight", False)
        out[hf + "ln_2.bias"] = (t + "ln_2.bias", False)
        out[hf + "mlp.c_fc.weight"] = (t + "mlp.fc.weight", True)
        out[hf + "mlp.c_fc.bias"] = (t + "mlp.fc.bias", False)
        out[hf + "mlp.c_proj.weight"] = (t + "mlp.proj.weight", True)
        out[hf + "mlp.c_proj.bias"] = (t + "mlp.proj.bias", False)
    out["transformer.ln_f.weight"] = ("ln_f.weight", False)
    out["transformer.ln_f.bias"] = ("ln_f.bias", False)
    return out


def build_model(pt_path: str) -> GPT:
    """torch_gpt2's GPT with the exported weights, loaded with strict=True."""
    cfg_path = os.path.splitext(pt_path)[0] + ".json"
    for p in (pt_path, cfg_path):
        if not os.path.isfile(p):
            raise CheckError(f"{p} not found (ckpt_to_torch.py writes OUT.pt and OUT.json)")
    with open(cfg_path) as f:
        hf = json.load(f)
    extra = hf.get("tessera", {})
    V = extra.get("vocab_size", hf["vocab_size"])
    cfg = GPTConfig(V=V, pad=extra.get("pad_vocab_to", 1), maxT=hf["n_positions"],
                    L=hf["n_layer"], NH=hf["n_head"], C=hf["n_embd"])
    if hf.get("activation_function") != "gelu_new" or hf.get("layer_norm_epsilon") != 1e-5:
        raise CheckError(f"{cfg_path}: activation {hf.get('activation_function')!r}, epsilon "
                         f"{hf.get('layer_norm_epsilon')!r}; torch_gpt2 is gelu_new with 1e-5")
    state = torch.load(pt_path, map_location="cpu")
    if not isinstance(state, dict):
        raise CheckError(f"{pt_path} holds a {type(state).__name__}, not a state_dict")

    mapped = OrderedDict()
    used = set()
    # wte: (rows, C) with rows = V, or Vp when the padding was kept; pad with zeros to Vp.
    wte = state.get("transformer.wte.weight")
    if wte is None:
        raise CheckError(f"{pt_path} has no transformer.wte.weight")
    if wte.dim() != 2 or wte.shape[0] not in (V, cfg.Vp) or wte.shape[1] != cfg.C:
        raise CheckError(f"transformer.wte.weight has shape {tuple(wte.shape)}; expected "
                         f"({V}, {cfg.C}) or padded ({cfg.Vp}, {cfg.C})")
    padded = torch.zeros(cfg.Vp, cfg.C, dtype=torch.float32)
    padded[: wte.shape[0]] = wte
    mapped["wte"] = padded
    used.add("transformer.wte.weight")
    head = state.get("lm_head.weight")
    if head is None or not torch.equal(head, wte):
        raise CheckError("lm_head.weight is missing or differs from transformer.wte.weight; "
                         "GPT-2's head is tied to the embedding")
    used.add("lm_head.weight")
    for hf_name, (name, transpose) in name_map(cfg.L).items():
        if hf_name not in state:
            raise CheckError(f"{pt_path} has no {hf_name}")
        t = state[hf_name]
        mapped[name] = t.t().contiguous() if transpose else t
        used.add(hf_name)
    unused = sorted(set(state) - used)
    if unused:
        raise CheckError(f"{pt_path} has tensors no GPT-2 parameter uses: {unused}")

    model = GPT(cfg)
    try:
        model.load_state_dict(mapped, strict=True)
    except RuntimeError as e:
        raise CheckError("torch_gpt2 rejects the mapped state_dict: " + " ".join(str(e).split()))
    return model.eval()


def parse_tokens(text: str, V: int, maxT: int) -> torch.Tensor:
    try:
        ids = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CheckError(f"tokens {text!r}: expected comma-separated integers, e.g. 5,17,2")
    if not ids or len(ids) > maxT:
        raise CheckError(f"tokens: {len(ids)} given; expected 1 to {maxT} (n_positions)")
    bad = [i for i in ids if not 0 <= i < V]
    if bad:
        raise CheckError(f"tokens {bad} are outside the vocabulary [0, {V})")
    return torch.tensor([ids], dtype=torch.int64)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pt", help="state_dict from ckpt_to_torch.py (its .json beside it)")
    ap.add_argument("tokens", help="comma-separated token ids, as given to tessera-ckpt logits")
    ap.add_argument("logits", help="Tessera's logits: float32 little-endian, (T, vocab_size)")
    ap.add_argument("--tol", type=float, default=1e-5, help="largest relative error accepted")
    args = ap.parse_args()
    try:
        model = build_model(args.pt)
        cfg = model.cfg
        tokens = parse_tokens(args.tokens, cfg.V, cfg.maxT)
        T = tokens.shape[1]
        if not os.path.isfile(args.logits):
            raise CheckError(f"logits file {args.logits} not found")
        theirs = np.fromfile(args.logits, dtype="<f4")
        if theirs.size != T * cfg.V:
            raise CheckError(f"{args.logits} holds {theirs.size} floats; {T} tokens x vocab "
                             f"{cfg.V} = {T * cfg.V} expected")
        theirs = torch.from_numpy(theirs.astype(np.float32).reshape(T, cfg.V))
        with torch.no_grad():
            ours, _ = model(tokens)
        ours = ours[0]
        if not torch.isfinite(theirs).all() or not torch.isfinite(ours).all():
            raise CheckError("non-finite logits (Tessera's or PyTorch's)")
    except CheckError as e:
        print(f"check_torch_export.py: {e}", file=sys.stderr)
        return 1
    diff = (ours - theirs).abs()
    scale = ours.abs().max().item()
    rel = diff.max().item() / scale if scale > 0 else float("inf")
    t, v = divmod(int(diff.argmax().item()), cfg.V)
    verdict = "ok" if rel <= args.tol else "FAIL"
    print(f"{verdict}: {T} tokens x {cfg.V} logits, max |torch - tessera| = "
          f"{diff.max().item():.3e} (token {t}, id {v}), max |torch| = {scale:.3e}, "
          f"relative error {rel:.3e} "
          f"(tolerance {args.tol:g})")
    return 0 if rel <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
