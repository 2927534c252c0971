#!/usr/bin/python3
"""Exports a Tessera HDF5 checkpoint (docs/CHECKPOINT-FORMAT.md, float32 or bfloat16) to a PyTorch
state_dict with Hugging Face GPT-2 names and layouts (GPT2LMHeadModel), plus a sibling .json with
the model config. Streams: reads each /model dataset once with h5py and verifies its checksum.

  /usr/bin/python3 scripts/ckpt_to_torch.py step_00000400.h5 gpt2.pt [--keep-padding]

Writes gpt2.pt (a plain state_dict, torch.save) and gpt2.json (n_layer, n_head, n_embd,
n_positions, vocab_size, ...; the `tessera` entry records what Hugging Face's config has no key
for). Hugging Face's Conv1D stores weights as (in, out), the transpose of Tessera's (out, in);
its vocabulary is unpadded, so wte rows at or past model.vocab_size are dropped unless
--keep-padding (then vocab_size in the .json is the padded size, so the file still loads).
lm_head.weight is tied to transformer.wte.weight: the same tensor, saved once.
Uses Debian's h5py and torch (/usr/bin/python3); never imports transformers.
"""

import argparse
import json
import os
import sys
from collections import OrderedDict

import h5py
import numpy as np
import torch
import yaml

FORMAT_VERSION = 1
LN_EPS = 1e-5
CHECKSUM_BLOCK = 1 << 20  # elements per step of the vectorised checksum
M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


class ExportError(Exception):
    """A problem with the input or output, reported as one line."""


def mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 arrays (numpy wraps mod 2^64)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def checksum(values: np.ndarray) -> int:
    """The format's dataset checksum of float32 `values` (row-major), in blocks of elements."""
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1).view(np.uint32)
    total = 0
    with np.errstate(over="ignore"):
        for start in range(0, flat.size, CHECKSUM_BLOCK):
            bits = flat[start:start + CHECKSUM_BLOCK].astype(np.uint64)
            index = np.arange(start, start + bits.size, dtype=np.uint64)
            total = (total + int(np.sum(mix64(mix64(index) ^ bits), dtype=np.uint64))) & int(M64)
    return total


def read_float32(ds: h5py.Dataset) -> np.ndarray:
    """The whole dataset as float32. float32 reads directly; another float type (the bfloat16
    serving type) through HDF5's conversion; if that fails, or the data is stored as raw 16-bit
    words, the words are taken as the top halves of float32s (bfloat16 widens exactly)."""
    kind, size = ds.dtype.kind, ds.dtype.itemsize
    if kind == "f" and size == 4:
        return ds[...].astype(np.float32, copy=False)
    if kind == "f":
        try:
            return ds.astype("float32")[...]
        except (TypeError, ValueError, OSError):
            if size != 2:
                raise
    if size != 2:
        raise ExportError(f"dataset {ds.name} has element type {ds.dtype} ({size} bytes); "
                          "expected float32 or bfloat16: write the file with tessera-train or "
                          "tessera-ckpt convert")
    words = np.empty(ds.shape, dtype=np.uint16)
    # Read with the file's own type as the memory type: no conversion, the raw 16-bit words.
    ds.id.read(h5py.h5s.ALL, h5py.h5s.ALL, words, mtype=ds.id.get_type())
    return (words.astype(np.uint32) << np.uint32(16)).view(np.float32)


def model_config(f: h5py.File, path: str) -> dict:
    """The stored config's model section, checked to be a GPT-2 Tessera can export."""
    if "format_version" not in f.attrs:
        raise ExportError(f"{path} has no format_version attribute: not a Tessera checkpoint")
    version = int(f.attrs["format_version"])
    if version != FORMAT_VERSION:
        raise ExportError(f"{path}: format version {version} is not supported "
                          f"(this script reads {FORMAT_VERSION})")
    text = f.attrs.get("config_yaml")
    if text is None:
        raise ExportError(f"{path} has no config_yaml attribute: the model config is unknown")
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    model = (yaml.safe_load(text) or {}).get("model") or {}
    for key in ("vocab_size", "max_seq_len", "n_layer", "n_head", "n_embd"):
        if not isinstance(model.get(key), int) or model[key] <= 0:
            raise ExportError(f"{path}: stored config has model.{key} = {model.get(key)!r}; "
                              "expected a positive integer")
    arch = model.get("arch", "gpt2")
    if arch != "gpt2":
        raise ExportError(f"{path}: model.arch is {arch!r}; only gpt2 maps to Hugging Face GPT-2")
    return model


def tessera_specs(L: int):
    """Tessera parameter names in ParamSpec order, each with its Hugging Face name and whether
    the weight is transposed (Linear (out, in) -> Conv1D (in, out)). wte is handled apart."""
    specs = [("wpe", "transformer.wpe.weight", False)]
    for l in range(L):
        t, hf = f"h.{l}.", f"transformer.h.{l}."
        specs += [
            (t + "ln_1.weight", hf + "ln_1.weight", False),
            (t + "ln_1.bias", hf + "ln_1.bias", False),
            (t + "attn.qkv.weight", hf + "attn.c_attn.weight", True),
            (t + "attn.qkv.bias", hf + "attn.c_attn.bias", False),
            (t + "attn.proj.weight", hf + "attn.c_proj.weight", True),
            (t + "attn.proj.bias", hf + "attn.c_proj.bias", False),
            (t + "ln_2.weight", hf + "ln_2.weight", False),
            (t + "ln_2.bias", hf + "ln_2.bias", False),
            (t + "mlp.fc.weight", hf + "mlp.c_fc.weight", True),
            (t + "mlp.fc.bias", hf + "mlp.c_fc.bias", False),
            (t + "mlp.proj.weight", hf + "mlp.c_proj.weight", True),
            (t + "mlp.proj.bias", hf + "mlp.c_proj.bias", False),
        ]
    specs += [("ln_f.weight", "transformer.ln_f.weight", False),
              ("ln_f.bias", "transformer.ln_f.bias", False)]
    return specs


def expected_shapes(model: dict, Vp: int) -> dict:
    T, C = model["max_seq_len"], model["n_embd"]
    shapes = {"wte": (Vp, C), "wpe": (T, C), "ln_f.weight": (C,), "ln_f.bias": (C,)}
    for l in range(model["n_layer"]):
        p = f"h.{l}."
        shapes.update({p + "ln_1.weight": (C,), p + "ln_1.bias": (C,),
                       p + "attn.qkv.weight": (3 * C, C), p + "attn.qkv.bias": (3 * C,),
                       p + "attn.proj.weight": (C, C), p + "attn.proj.bias": (C,),
                       p + "ln_2.weight": (C,), p + "ln_2.bias": (C,),
                       p + "mlp.fc.weight": (4 * C, C), p + "mlp.fc.bias": (4 * C,),
                       p + "mlp.proj.weight": (C, 4 * C), p + "mlp.proj.bias": (C,)})
    return shapes


def export(ckpt: str, keep_padding: bool, verify: bool):
    """Returns (state_dict, config) for the checkpoint at `ckpt`."""
    if not os.path.isfile(ckpt):
        raise ExportError(f"checkpoint {ckpt} not found")
    try:
        f = h5py.File(ckpt, "r")
    except OSError as e:
        raise ExportError(f"{ckpt} does not open as HDF5 ({e}): not a checkpoint, or truncated")
    with f:
        model = model_config(f, ckpt)
        V, C, L = model["vocab_size"], model["n_embd"], model["n_layer"]
        if "model" not in f:
            raise ExportError(f"{ckpt} has no /model group")
        group = f["model"]
        pad = model.get("pad_vocab_to", 1)
        if not isinstance(pad, int) or pad <= 0:
            raise ExportError(f"{ckpt}: stored config has model.pad_vocab_to = {pad!r}; "
                              "expected a positive integer")
        shapes = expected_shapes(model, (V + pad - 1) // pad * pad)
        missing = sorted(set(shapes) - set(group.keys()))
        extra = sorted(set(group.keys()) - set(shapes))
        if missing or extra:
            raise ExportError(f"{ckpt}: /model does not match the stored config (missing "
                              f"{missing or 'none'}, unexpected {extra or 'none'})")

        def load(name: str) -> np.ndarray:
            ds = group[name]
            if ds.shape != shapes[name]:
                raise ExportError(f"{ckpt}: /model/{name} has shape {ds.shape}, the stored "
                                  f"config implies {shapes[name]}")
            data = read_float32(ds)
            if verify and "checksum" in ds.attrs:
                stored, computed = int(ds.attrs["checksum"]), checksum(data)
                if stored != computed:
                    raise ExportError(f"{ckpt}: dataset /model/{name} checksum mismatch (stored "
                                      f"{stored:#018x}, computed {computed:#018x}): the file "
                                      "is corrupt; use an earlier checkpoint")
            return data

        state = OrderedDict()
        wte = load("wte")
        Vp = wte.shape[0]
        rows = Vp if keep_padding else V
        # A copy of the kept rows: torch.save writes a view's whole storage.
        state["transformer.wte.weight"] = torch.from_numpy(np.array(wte[:rows], copy=True))
        del wte
        for name, hf_name, transpose in tessera_specs(L):
            data = load(name)
            state[hf_name] = torch.from_numpy(np.ascontiguousarray(data.T if transpose else data))
        state["lm_head.weight"] = state["transformer.wte.weight"]  # tied: one tensor
        config = {
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "n_layer": L,
            "n_head": model["n_head"],
            "n_embd": C,
            "n_positions": model["max_seq_len"],
            "n_ctx": model["max_seq_len"],
            "n_inner": None,
            "vocab_size": rows,
            "layer_norm_epsilon": LN_EPS,
            "activation_function": "gelu_new",
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "tie_word_embeddings": True,
            "torch_dtype": "float32",
            "tessera": {
                "vocab_size": V,
                "padded_vocab_size": Vp,
                "pad_vocab_to": pad,
                "padding_kept": keep_padding,
                "step": int(f.attrs.get("step", -1)),
                "source": os.path.abspath(ckpt),
            },
        }
    return state, config


def config_path(out: str) -> str:
    """The sibling config file of OUT: OUT with its extension replaced by .json."""
    return os.path.splitext(out)[0] + ".json"


def write_json(path: str, obj) -> None:
    with open(path, "w") as out:
        out.write(json.dumps(obj, indent=2) + "\n")


def write_atomic(path: str, write) -> None:
    tmp = path + ".tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise ExportError(f"cannot write {path}: {e.strerror or e}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpt", help="Tessera HDF5 checkpoint (float32 or bfloat16)")
    ap.add_argument("out", help="output state_dict (.pt); the config goes to the same name .json")
    ap.add_argument("--keep-padding", action="store_true",
                    help="keep wte's padding rows (the .json's vocab_size becomes the padded "
                    "size)")
    ap.add_argument("--no-verify", action="store_true", help="skip the dataset checksums")
    args = ap.parse_args()
    if os.path.splitext(args.out)[1] == ".json":
        print(f"ckpt_to_torch.py: output {args.out} ends in .json, the name of its config file; "
              "use e.g. model.pt", file=sys.stderr)
        return 2
    try:
        state, config = export(args.ckpt, args.keep_padding, not args.no_verify)
        cfg_out = config_path(args.out)
        write_atomic(args.out, lambda p: torch.save(state, p))
        write_atomic(cfg_out, lambda p: write_json(p, config))
    except ExportError as e:
        print(f"ckpt_to_torch.py: {e}", file=sys.stderr)
        return 1
    numbers = sum(t.numel() for k, t in state.items() if k != "lm_head.weight")
    print(f"wrote {args.out} ({len(state)} tensors, {numbers} numbers, lm_head tied to wte) "
          f"and {cfg_out} (step {config['tessera']['step']}, vocab {config['vocab_size']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
