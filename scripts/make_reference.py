#!/usr/bin/python3
"""Writes tests/data/gpt2_reference.bin: a tiny GPT-2's parameters, logits, loss, every gradient
and ten AdamW steps, computed in float32 by scripts/torch_gpt2.py, for the C++ golden tests.
Deterministic: two runs write the same bytes (single thread, fixed seed, deterministic kernels).

File format (little-endian), read by tests/unit/reference_file.h:
  int32 magic 0x46525354 ("TSRF" as bytes), int32 version 1, int32 tensor_count, then per tensor:
  int32 name_len, name (utf-8, no NUL), int32 dtype (0 = float32, 1 = int32), int32 ndim,
  int64 dims[ndim], raw row-major data.
"""

import argparse
import copy
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt2 import GPT, GPTConfig, make_adamw  # noqa: E402

MAGIC = 0x46525354
VERSION = 1
DTYPE_F32, DTYPE_I32 = 0, 1

SEED = 1337
CFG = GPTConfig(V=97, pad=64, maxT=16, L=2, NH=4, C=32)
B, T = 2, 8
ADAMW = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0)
STEPS = 10
MAX_BYTES = 2 * 1024 * 1024


def perturb(model: GPT, gen: torch.Generator) -> None:
    """Moves LayerNorm and bias parameters off ones/zeros so no gradient is trivially symmetric."""
    with torch.no_grad():
        for name, p in model.named_params().items():
            if "ln_" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def encode(name: str, t: torch.Tensor) -> bytes:
    if t.dtype == torch.float32:
        dtype = DTYPE_F32
    elif t.dtype == torch.int32:
        dtype = DTYPE_I32
    else:
        raise TypeError(f"tensor {name}: dtype {t.dtype} is not float32 or int32")
    t = t.detach().contiguous().cpu()
    raw = name.encode("utf-8")
    out = struct.pack("<i", len(raw)) + raw + struct.pack("<ii", dtype, t.dim())
    out += struct.pack(f"<{t.dim()}q", *t.shape)
    # The explicit '<' dtype makes the bytes little-endian whatever the host's order.
    np_dtype = "<f4" if dtype == DTYPE_F32 else "<i4"
    out += t.numpy().astype(np_dtype, copy=False).tobytes(order="C")
    return out


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data",
                                                  "gpt2_reference.bin"))
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)

    model = GPT(CFG)
    perturb(model, gen)
    init_state = copy.deepcopy(model.state_dict())

    tokens = torch.randint(0, CFG.V, (B, T), generator=gen)
    targets = torch.randint(0, CFG.V, (B, T), generator=gen)
    ignored = int(torch.randint(0, B * T, (1,), generator=gen))
    targets.view(-1)[ignored] = -1

    # Forward and backward once from the initial weights.
    logits, loss = model(tokens, targets)
    loss.backward()
    params = model.named_params()
    tensors = [
        ("config", torch.tensor([CFG.V, CFG.Vp, CFG.maxT, CFG.L, CFG.NH, CFG.C, B, T],
                                dtype=torch.int32)),
        ("tokens", tokens.to(torch.int32)),
        ("targets", targets.to(torch.int32)),
    ]
    tensors += [(n, p) for n, p in params.items()]
    tensors += [("logits", logits), ("loss", loss.reshape(1))]
    tensors += [("grad." + n, p.grad) for n, p in params.items()]
    assert float(params["wte"].grad[CFG.V:].abs().max()) == 0.0, "padded wte rows got gradient"

    # Float64 twin: how far float32 is from exact, a floor for the C++ tolerances.
    model64 = copy.deepcopy(model).double()
    model64.zero_grad(set_to_none=True)
    logits64, loss64 = model64(tokens, targets)
    loss64.backward()
    logit_err = float((logits.double() - logits64).abs().max())
    grad_rel = max(float((p.grad.double() - p64.grad).norm() / p64.grad.norm().clamp_min(1e-30))
                   for p, p64 in zip(params.values(), model64.named_params().values())
                   if p64.grad.norm() > 0)

    # Ten AdamW steps from a fresh copy of the same initial weights, same batch every step.
    trained = GPT(CFG)
    trained.load_state_dict(init_state)
    opt = make_adamw(trained, lr=ADAMW["lr"], betas=(ADAMW["beta1"], ADAMW["beta2"]),
                     eps=ADAMW["eps"], weight_decay=ADAMW["weight_decay"])
    plist = list(trained.named_params().values())
    losses, norms = [], []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        _, step_loss = trained(tokens, targets)
        step_loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(plist, ADAMW["grad_clip"])
        opt.step()
        losses.append(float(step_loss))
        norms.append(float(norm))
    tensors += [
        ("adamw.hparams", torch.tensor([ADAMW[k] for k in
                                        ("lr", "beta1", "beta2", "eps", "weight_decay",
                                         "grad_clip")], dtype=torch.float32)),
        ("adamw.losses", torch.tensor(losses, dtype=torch.float32)),
        ("adamw.grad_norms", torch.tensor(norms, dtype=torch.float32)),
    ]
    final = [("final." + n, p) for n, p in trained.named_params().items()]
    assert float(final[0][1][CFG.V:].abs().max()) == 0.0, "padded wte rows moved in training"

    def blob(ts):
        body = b"".join(encode(n, t) for n, t in ts)
        return struct.pack("<iii", MAGIC, VERSION, len(ts)) + body

    data = blob(tensors + final)
    dropped_final = len(data) > MAX_BYTES
    if dropped_final:
        data = blob(tensors)
        final = []
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(data)

    print(f"wrote {os.path.normpath(args.out)}: {len(data)} bytes, "
          f"{len(tensors) + len(final)} tensors{' (final.* dropped)' if dropped_final else ''}")
    print(f"config V={CFG.V} Vp={CFG.Vp} maxT={CFG.maxT} L={CFG.L} NH={CFG.NH} C={CFG.C} "
          f"B={B} T={T}; params {model.num_params()} (excl. padding); ignored target at "
          f"flat index {ignored}")
    print(f"loss {float(loss):.6f} (float64 {float(loss64):.6f}); "
          f"max |logits32 - logits64| {logit_err:.2e}; max grad rel err {grad_rel:.2e}")
    print("adamw losses:     " + " ".join(f"{x:.5f}" for x in losses))
    print("adamw grad norms: " + " ".join(f"{x:.5f}" for x in norms))


if __name__ == "__main__":
    main()
