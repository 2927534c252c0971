#!/usr/bin/env python3
"""The PyTorch peer of issue 13's GPU training benchmark (bench/run_gpu_bench.sh): a nanoGPT-style
GPT-2 (pre-LayerNorm, tanh GELU, tied head over the padded vocabulary, biases), bf16 autocast, flash attention
through scaled_dot_product_attention(is_causal=True), fused AdamW, TF32 allowed; eager or
torch.compile. Each step is forward, loss, backward (over B / micro-batch micro-batches),
gradient clipping at 1.0 and AdamW, as bench_train does for Tessera. Random tokens, the same
batch every step, so the loss must fall; the script says so when it does not.

  python3 bench/torch_gpu_train_bench.py --config 124m --batch 64 --seq 1024 [--compile]
      [--steps 20] [--warmup 5] [--micro-batch 16] [--peak-only]

--peak measures the bf16 GEMM peak first (8192^3 products, the mean of 10 after 3 warm-ups, the
figure docs/PERF.md's MFU is against) and reports it; --peak-only stops there. Prints one JSON
line per measurement. Runs on the GPU machine's PyTorch 2.x; with --device cpu it also runs on
Debian's torch 1.13 here (explicit attention where SDPA is missing), which only checks the script.
"""

import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    # name: (L, NH, C); every one has GPT-2's vocabulary (50257, padded to 50304) and context 1024
    "tiny": (2, 4, 128),
    "124m": (12, 12, 768),
    "350m": (24, 16, 1024),
}
V, VP, MAXT = 50257, 50304, 1024


class Attention(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.NH, C // self.NH).transpose(1, 2) for t in (q, k, v))
        if hasattr(F, "scaled_dot_product_attention"):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # torch 1.x (the script check on this machine's Debian torch)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            y = att.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.attn = Attention(C, NH)
        self.fc, self.fc2 = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L, NH, C):
        super().__init__()
        self.wte = nn.Embedding(VP, C)
        self.wpe = nn.Embedding(MAXT, C)
        self.h = nn.ModuleList(Block(C, NH) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for blk in self.h:
            x = blk(x)
        # Tied head over the padded vocabulary, loss over all 50304 columns, as nanoGPT does (its
        # fastest form; Tessera masks the 47 padding columns, which costs the same arithmetic).
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, VP), targets.view(-1))


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def measure_peak(device):
    """bf16 GEMM TFLOP/s on 8192^3 products: the mean of 10 after 3 warm-ups."""
    n = 8192 if device == "cuda" else 1024
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 2 * n**3 * 10 / (time.perf_counter() - t) / 1e12


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="124m")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--micro-batch", type=int, default=0, help="0: the whole batch")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--peak", action="store_true", help="measure the bf16 GEMM peak first")
    ap.add_argument("--peak-only", action="store_true")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    micro = args.micro_batch or args.batch
    if args.batch % micro or args.seq > MAXT or args.steps < 1 or args.warmup < 0:
        ap.error(f"need --micro-batch dividing --batch ({micro} / {args.batch}), --seq <= {MAXT}, "
                 f"--steps >= 1 and --warmup >= 0")
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_gpu_train_bench: no CUDA device visible to PyTorch; use --device cpu")
    gpu = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"
    if args.peak or args.peak_only:
        print(json.dumps({"impl": "pytorch-bf16-gemm-peak" if dev == "cuda" else "pytorch-gemm",
                          "device": gpu, "torch": torch.__version__,
                          "peak_tflops": measure_peak(dev)}), flush=True)
        if args.peak_only:
            return
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    L, NH, C = CONFIGS[args.config]
    model = GPT(L, NH, C).to(dev)
    params = sum(p.numel() for p in model.parameters())
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
                                weight_decay=0.1, fused=(dev == "cuda"))
        fused = dev == "cuda"
    except TypeError:  # torch 1.x has no fused AdamW
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
                                weight_decay=0.1)
        fused = False
    run = torch.compile(model) if args.compile else model
    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, V, (args.batch, args.seq), generator=g).to(dev)
    targets = torch.randint(0, V, (args.batch, args.seq), generator=g).to(dev)
    amp = (torch.autocast(device_type=dev, dtype=torch.bfloat16) if args.dtype == "bf16"
           else torch.autocast(device_type=dev, enabled=False))
    step_ms, losses = [], []
    t_start = time.perf_counter()
    for s in range(args.warmup + args.steps):
        sync(dev)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for b0 in range(0, args.batch, micro):
            with amp:
                loss = run(tokens[b0:b0 + micro], targets[b0:b0 + micro])
            (loss * (micro / args.batch)).backward()
            loss_sum += loss.detach() * (micro / args.batch)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sync(dev)
        if s >= args.warmup:
            step_ms.append((time.perf_counter() - t) * 1e3)
        losses.append(float(loss_sum))
        if s == 0:
            first_step_s = time.perf_counter() - t_start  # includes compilation when compiled
    med = statistics.median(step_ms)
    out = {
        "impl": "pytorch-" + ("compile" if args.compile else "eager"),
        "device": gpu, "torch": torch.__version__, "config": args.config, "params": params,
        "B": args.batch, "micro_batch": micro, "T": args.seq, "dtype": args.dtype,
        "attention": "sdpa" if hasattr(F, "scaled_dot_product_attention") else "explicit",
        "fused_adamw": fused, "steps": args.steps,
        "tokens_per_s": args.batch * args.seq / (med / 1e3), "step_ms_median": med,
        "step_ms_min": min(step_ms), "first_step_s": first_step_s,
        "loss_first": losses[0], "loss_last": losses[-1],
        "loss_fell": losses[-1] < losses[0],
    }
    if dev == "cuda":
        out["max_memory_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out), flush=True)
    if not losses[-1] < losses[0]:
        sys.exit(f"torch_gpu_train_bench: the loss did not fall ({losses[0]} -> {losses[-1]})")


if __name__ == "__main__":
    main()
