#!/usr/bin/python3
"""PyTorch DDP peer for Tessera's grid benchmark (bench/bench_grid.cpp): N processes on this
machine, gloo backend on CPU, the GPT-2 of scripts/torch_gpt2.py, b sequences per rank (global
batch = b x N), each step forward, loss, backward (DDP all-reduces gradient buckets during it),
grad-norm clipping and AdamW. Prints one JSON line from rank 0 with bench_grid's fields.

The script launches its own workers (no torchrun): each is this file re-run with --worker and
RANK / WORLD_SIZE / MASTER_ADDR=127.0.0.1 / MASTER_PORT (a free port) and the thread variables
OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and OMP_WAIT_POLICY=PASSIVE in its environment before torch
loads (Debian's torch uses the system OpenBLAS, whose pool only those variables bound).
Usage: bench/torch_ddp_bench.py --config 124m --ranks 2 --batch-per-rank 2 --seq 64 --steps 3
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

CONFIGS = {
    # name: (V, pad, maxT, L, NH, C) -- as bench/torch_train_bench.py
    "tiny": (4096, 128, 128, 4, 4, 128),
    "124m": (50257, 128, 1024, 12, 12, 768),
}


def parse_args():
    ap = argparse.ArgumentParser(description="PyTorch DDP (gloo, CPU) GPT-2 training benchmark")
    ap.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    ap.add_argument("--ranks", type=int, default=2, help="processes (data-parallel size)")
    ap.add_argument("--batch-per-rank", type=int, default=4, help="b: sequences per rank")
    ap.add_argument("--seq", type=int, default=64, help="T: tokens per sequence")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    ap.add_argument("--bucket-mb", type=float, default=25.0, help="DDP bucket_cap_mb")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    maxT = CONFIGS[args.config][2]
    if (args.ranks < 1 or args.batch_per_rank < 1 or not 1 <= args.seq <= maxT
            or args.steps < 1 or args.warmup < 0 or args.threads < 1 or args.bucket_mb <= 0):
        ap.error(f"need --ranks >= 1 (got {args.ranks}), --batch-per-rank >= 1 (got "
                 f"{args.batch_per_rank}), 1 <= --seq <= {maxT} (got {args.seq}), --steps >= 1 "
                 f"(got {args.steps}), --warmup >= 0 (got {args.warmup}), --threads >= 1 (got "
                 f"{args.threads}) and --bucket-mb > 0 (got {args.bucket_mb})")
    return args


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args) -> int:
    """Starts args.ranks workers with the rendezvous and thread environment; returns the first
    non-zero exit code (killing the others), or 0."""
    assert "torch" not in sys.modules, "the launcher must not import torch"
    port = free_port()
    procs = []
    for rank in range(args.ranks):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                   WORLD_SIZE=str(args.ranks), OMP_NUM_THREADS=str(args.threads),
                   OPENBLAS_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="PASSIVE")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker"] + sys.argv[1:]
        procs.append(subprocess.Popen(cmd, env=env))
    code = 0
    pending = list(procs)
    while pending:
        for p in list(pending):
            rc = p.poll()
            if rc is None:
                continue
            pending.remove(p)
            if rc != 0 and code == 0:
                code = rc
                for q in pending:  # a failed rank leaves the others blocked in a collective
                    q.kill()
        time.sleep(0.05)
    return code


def worker(args) -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    import torch  # noqa: E402  (only after the thread environment is in place)
    import torch.distributed as dist  # noqa: E402
    from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
    from torch_gpt2 import GPT, GPTConfig, make_adamw  # noqa: E402

    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    V, pad, maxT, L, NH, C = CONFIGS[args.config]
    B, T = args.batch_per_rank, args.seq

    torch.manual_seed(args.seed)  # every rank builds the same weights (DDP also broadcasts them)
    model = GPT(GPTConfig(V=V, pad=pad, maxT=maxT, L=L, NH=NH, C=C))
    model.train()
    # The causal masks are constant bool buffers: gloo cannot broadcast bool tensors, and every
    # rank builds them alike, so DDP is told to leave them out of its initial sync (and
    # broadcast_buffers=False keeps them out of every forward: traffic Tessera does not have).
    masks = [name for name, _ in model.named_buffers() if name.endswith("attn.mask")]
    DDP._set_params_and_buffers_to_ignore_for_model(model, masks)
    ddp = DDP(model, bucket_cap_mb=args.bucket_mb, broadcast_buffers=False)
    opt = make_adamw(model, lr=1e-4)
    gen = torch.Generator().manual_seed(args.seed + 1000 * rank)  # this rank's slice of the batch
    tokens = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)

    step_s = []
    for step in range(args.warmup + args.steps):
        dist.barrier()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        _, loss = ddp(tokens, targets)
        loss.backward()  # DDP: gradients are averaged over ranks when this returns
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        elapsed = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # a step lasts as long as its slowest rank
        if not torch.isfinite(loss):
            sys.exit(f"torch_ddp_bench: rank {rank}: loss is {float(loss)} at step {step}")
        if step >= args.warmup:
            step_s.append(float(elapsed))

    if rank == 0:
        median_s = statistics.median(step_s)
        print(json.dumps({
            "impl": "pytorch-ddp",
            "torch": torch.__version__,
            "backend": "gloo",
            "config": args.config,
            "world": world,
            "dp": world,
            "tp": 1,
            "B_per_rank": B,
            "B_global": B * world,
            "T": T,
            "threads": args.threads,
            "tokens_per_s": B * world * T / median_s,
            "step_ms_median": 1e3 * median_s,
            "step_ms_min": 1e3 * min(step_s),
            "steps": args.steps,
            "warmup": args.warmup,
            "bucket_mb": args.bucket_mb,
            "params": model.num_params(),
        }), flush=True)
    dist.destroy_process_group()


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
    else:
        sys.exit(launch(args))


if __name__ == "__main__":
    main()
