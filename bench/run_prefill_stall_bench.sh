#!/usr/bin/env bash
# How long a prompt's prefill stalls the streams already decoding, with and without the per-step
# prefill budget (serve.max_prefill_tokens; docs/SERVING.md "Chunked prefill"). GPT-2 124M fp32
# on this CPU (the checkpoint of run_serve_bench.sh), tessera-serve at 1 x 1 with 16 sequences.
# Each phase: 4 clients stream greedy requests of 64 prompt + 128 new tokens, one each; 2 s in, one
# more request arrives with an 896-token prompt and 16 new tokens. Reported per budget: the
# streams' inter-token latency p50 / p99, the longest gap of a stream while the long request
# waited for its first token ("stall"), the long request's TTFT, and the streams' output tok/s.
# Budgets are run in interleaved rounds (a server per budget per round), medians over rounds.
# Usage: bench/run_prefill_stall_bench.sh [APPS_DIR]   (default build/apps)
# Environment: THREADS (default: all cores), BUDGETS (default "1024 256 128 64"; 1024, the
# context, is no limit: the step's rows already bound it; 128 is the default on a CPU),
# ROUNDS (default 3), LONG (the long prompt's tokens, default 896), WORK (default
# /tmp/tessera-serve-bench, shared with run_serve_bench.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGETS=${BUDGETS:-1024 256 128 64}
ROUNDS=${ROUNDS:-3}
LONG=${LONG:-896}
source bench/serve_bench_lib.sh "$@"

for round in $(seq 1 "$ROUNDS"); do
  for budget in $BUDGETS; do
    serve_start "$WORK/stall.log" --max-sequences 16 --max-prefill-tokens "$budget"
    load --concurrency 1 --requests 1 --index-offset 100000 > /dev/null  # warm-up: other prompts
    load --concurrency 4 --requests 4 --long-prompt-len "$LONG" --long-at 2 \
      --long-max-tokens 16 --json "$WORK/stall_${budget}_$round.json" > /dev/null
    serve_stop
  done
done

$PY - "$WORK" "$ROUNDS" $BUDGETS << 'PY'
import json
import statistics
import sys

work, rounds, budgets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("| budget (tokens a step) | ITL p50 / p99 (ms) | stall (ms) | long TTFT (ms) | "
      "streams' output tok/s |")
print("|---|---|---|---|---|")
for b in budgets:
    runs = [json.load(open(f"{work}/stall_{b}_{r}.json")) for r in range(1, rounds + 1)]
    med = lambda f: statistics.median(f(j) for j in runs)
    spread = lambda f: "-".join(f"{v:.0f}" for v in (min(f(j) for j in runs),
                                                     max(f(j) for j in runs)))
    stall = lambda j: j["stall_ms"] or 0.0
    ttft = lambda j: j["long"]["ttft_ms"] or float("nan")
    print(f"| {b} | {med(lambda j: j['itl_ms']['p50']):.1f} / "
          f"{med(lambda j: j['itl_ms']['p99']):.1f} | {med(stall):.0f} ({spread(stall)}) | "
          f"{med(ttft):.0f} ({spread(ttft)}) | {med(lambda j: j['output_tokens_per_s']):.1f} |")
print(f"(medians of {rounds} rounds; min-max in brackets)")
PY
