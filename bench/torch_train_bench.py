#!/usr/bin/python3
"""PyTorch CPU peer for Tessera's training benchmark: times forward + loss + backward + AdamW
steps of scripts/torch_gpt2.py (the same model code as the fidelity reference) and prints one
JSON line. Thread counts are pinned before torch loads, so the peer uses exactly --threads cores.

Debian's torch calls the system OpenBLAS, whose thread pool torch.set_num_threads does not bound;
OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and OMP_WAIT_POLICY=PASSIVE must be in the environment when
the BLAS library loads. If they are missing or disagree with --threads, this script re-executes
itself with them set.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

CONFIGS = {
    # name: (V, pad, maxT, L, NH, C, default B, default T)
    "tiny": (4096, 128, 128, 4, 4, 128, 4, 64),
    "124m": (50257, 128, 1024, 12, 12, 768, 4, 64),
}
_REEXEC_MARK = "TESSERA_TORCH_BENCH_REEXEC"


def parse_args():
    ap = argparse.ArgumentParser(description="PyTorch CPU GPT-2 training step benchmark")
    ap.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    ap.add_argument("--batch", type=int, default=None, help="B (default: the config's, 4)")
    ap.add_argument("--seq", type=int, default=None, help="T (default: the config's, 64)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for torch and BLAS")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    if args.threads < 1 or args.steps < 1 or args.warmup < 0:
        ap.error(f"need --threads >= 1 (got {args.threads}), --steps >= 1 (got {args.steps}), "
                 f"--warmup >= 0 (got {args.warmup})")
    return args


def pin_threads_env(threads: int) -> None:
    """Makes sure the BLAS/OpenMP thread variables say `threads` before torch is imported,
    re-executing this interpreter with them set when they do not."""
    assert "torch" not in sys.modules, "torch must not be imported before the thread env is set"
    want = {"OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
            "OMP_WAIT_POLICY": "PASSIVE"}
    wrong = {k: os.environ.get(k) for k, v in want.items() if os.environ.get(k) != v}
    if not wrong:
        return
    if os.environ.get(_REEXEC_MARK):
        sys.exit(f"torch_train_bench: thread environment still wrong after re-exec: {wrong}; "
                 f"set {' '.join(f'{k}={v}' for k, v in want.items())} and rerun")
    env = dict(os.environ, **want)
    env[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)


def main() -> None:
    args = parse_args()
    pin_threads_env(args.threads)

    import torch  # noqa: E402  (only after the thread environment is pinned)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
    from torch_gpt2 import GPT, GPTConfig, make_adamw  # noqa: E402

    torch.set_num_threads(args.threads)
    V, pad, maxT, L, NH, C, B, T = CONFIGS[args.config]
    B = args.batch if args.batch is not None else B
    T = args.seq if args.seq is not None else T
    if not (1 <= T <= maxT) or B < 1:
        sys.exit(f"torch_train_bench: need 1 <= --seq <= {maxT} and --batch >= 1 "
                 f"(got T={T}, B={B})")

    torch.manual_seed(args.seed)
    model = GPT(GPTConfig(V=V, pad=pad, maxT=maxT, L=L, NH=NH, C=C))
    model.train()
    opt = make_adamw(model, lr=1e-4)
    gen = torch.Generator().manual_seed(args.seed)

    step_s = []
    for step in range(args.warmup + args.steps):
        tokens = torch.randint(0, V, (B, T), generator=gen)
        targets = torch.randint(0, V, (B, T), generator=gen)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        _, loss = model(tokens, targets)
        loss.backward()
        opt.step()
        elapsed = time.perf_counter() - t0
        if not torch.isfinite(loss):
            sys.exit(f"torch_train_bench: loss is {float(loss)} at step {step}")
        if step >= args.warmup:
            step_s.append(elapsed)

    print(json.dumps({
        "impl": "pytorch",
        "torch": torch.__version__,
        "config": args.config,
        "B": B,
        "T": T,
        "threads": args.threads,
        "tokens_per_s": statistics.median(B * T / s for s in step_s),
        "step_ms_median": 1e3 * statistics.median(step_s),
        "step_ms_min": 1e3 * min(step_s),
        "steps": args.steps,
        "warmup": args.warmup,
        "params": model.num_params(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }))


if __name__ == "__main__":
    main()
