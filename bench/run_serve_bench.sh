#!/usr/bin/env bash
# The serving benchmark of issue 14 on this CPU, back to back in one run, GPT-2 124M
# (configs/gpt2-124m.yaml) in fp32 with near-random weights (one training step from the init: the
# speed does not depend on the weights), greedy, prompt 64 + 128 new tokens:
#   (a) tessera-serve at concurrency 1 against a plain PyTorch GPT-2 with a KV cache at batch 1
#       (bench/torch_kv_generate.py, Debian's python3-torch), output tokens/s; goal >= 2x;
#   (b) tessera-serve's output tokens/s at concurrency 16 against concurrency 1; goal >= 5x;
#   (c) Poisson arrivals at half the saturation rate (the request throughput measured at
#       concurrency 16): p99 TTFT <= 2x p50 TTFT.
# Usage: bench/run_serve_bench.sh [APPS_DIR]   (default build/apps)
# Environment: THREADS (compute threads for both sides; default: all cores), N1, N16, NPOISSON
# (requests per phase; defaults 4, 32, 24), WORK (scratch and cache; default
# /tmp/tessera-serve-bench: the data and checkpoint are made once and kept).
# Prints each phase's JSON (bench/serve_load.py) and a summary; writes $WORK/summary.json.
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${N1:-4}
N16=${N16:-32}
NPOISSON=${NPOISSON:-24}

source bench/serve_bench_lib.sh "$@"
if [[ ! -s $WORK/gpt2.pt ]]; then
  $PY scripts/ckpt_to_torch.py "$model" "$WORK/gpt2.pt" > /dev/null
fi

# (a) the PyTorch peer.
$PY bench/torch_kv_generate.py "$WORK/gpt2.pt" --prompt-len 64 --new 128 --runs 3 \
  --threads "$THREADS" | tee "$WORK/torch.json"

# tessera-serve: 16 sequences, a queue for every request of a phase.
serve_start "$WORK/serve.log" --max-sequences 16 --max-queue 256
# Each phase has its own prompts (--index-offset): no request finds another phase's prompt kept
# in a freed slot (prefix reuse), as the PyTorch peer would not.
load --concurrency 1 --requests 1 --index-offset 100000 > /dev/null  # warm-up
load --concurrency 1 --requests "$N1" --json "$WORK/c1.json"
load --concurrency 16 --requests "$N16" --index-offset 1000 --json "$WORK/c16.json"
rate=$($PY -c "import json; print(json.load(open('$WORK/c16.json'))['request_throughput'] / 2)")
load --rate "$rate" --requests "$NPOISSON" --seed 1 --index-offset 2000 --json "$WORK/poisson.json"
serve_stop

$PY - "$WORK" << 'PY'
import json
import sys

work = sys.argv[1]
torch = json.load(open(f"{work}/torch.json"))
c1, c16, poisson = (json.load(open(f"{work}/{n}.json")) for n in ("c1", "c16", "poisson"))
a = c1["output_tokens_per_s"] / torch["tokens_per_s"]
b = c16["output_tokens_per_s"] / c1["output_tokens_per_s"]
c = poisson["ttft_ms"]["p99"] / poisson["ttft_ms"]["p50"]
rows = [
    ("(a) concurrency 1 vs PyTorch KV, output tok/s",
     f"{c1['output_tokens_per_s']:.2f} vs {torch['tokens_per_s']:.2f}", a, ">= 2", a >= 2),
    ("(b) concurrency 16 vs 1, output tok/s",
     f"{c16['output_tokens_per_s']:.2f} vs {c1['output_tokens_per_s']:.2f}", b, ">= 5", b >= 5),
    (f"(c) Poisson {poisson['mode']}, TTFT p99 / p50",
     f"{poisson['ttft_ms']['p99']:.0f} / {poisson['ttft_ms']['p50']:.0f} ms", c, "<= 2", c <= 2),
]
for name, values, ratio, goal, met in rows:
    print(f"{name}: {values} = {ratio:.2f}x (goal {goal}: {'met' if met else 'MISSED'})")
json.dump({"torch": torch, "c1": c1, "c16": c16, "poisson": poisson,
           "ratios": {"a": a, "b": b, "c": c}}, open(f"{work}/summary.json", "w"))
PY
