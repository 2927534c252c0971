#!/usr/bin/env bash
# What prefix reuse (serve.prefix_cache; docs/SERVING.md "Prefix reuse") saves when requests share
# a system prompt. GPT-2 124M fp32 on this CPU (the checkpoint of run_serve_bench.sh),
# tessera-serve at 1 x 1 with 16 sequences, prefix cache on and off, in interleaved rounds (a
# fresh server each time). Each phase: 4 clients send REQUESTS greedy requests of PROMPT prompt
# tokens, the first SHARED of them the same in every request, and 32 new tokens. Reported per
# setting: TTFT p50 / p99, E2E p50, output tok/s, and the prompt tokens reused
# (tessera_prefix_cache_hit_tokens_total); medians over rounds.
# Usage: bench/run_prefix_cache_bench.sh [APPS_DIR]   (default build/apps)
# Environment: THREADS (default: all cores), ROUNDS (default 3), REQUESTS (default 16), PROMPT
# (default 512), SHARED (default 448), WORK (default /tmp/tessera-serve-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-16}
PROMPT=${PROMPT:-512}
SHARED=${SHARED:-448}
source bench/serve_bench_lib.sh "$@"

for round in $(seq 1 "$ROUNDS"); do
  for cache in true false; do
    serve_start "$WORK/prefix.log" --max-sequences 16 --prefix-cache "$cache"
    load --concurrency 1 --requests 1 --index-offset 100000 > /dev/null  # warm-up: no shared prefix
    load --concurrency 4 --requests "$REQUESTS" --prompt-len "$PROMPT" --max-tokens 32 \
      --shared-prefix-len "$SHARED" --json "$WORK/prefix_${cache}_$round.json" > /dev/null
    curl -s "http://127.0.0.1:$port/metrics" \
      | sed -n 's/^tessera_prefix_cache_hit_tokens_total \(.*\)/\1/p' \
      > "$WORK/prefix_${cache}_$round.hits"
    serve_stop
  done
done

$PY - "$WORK" "$ROUNDS" << 'PY'
import json
import statistics
import sys

work, rounds = sys.argv[1], int(sys.argv[2])
print("| prefix cache | TTFT p50 / p99 (ms) | E2E p50 (ms) | output tok/s | prompt tokens reused |")
print("|---|---|---|---|---|")
for cache in ("true", "false"):
    runs = [json.load(open(f"{work}/prefix_{cache}_{r}.json")) for r in range(1, rounds + 1)]
    hits = [float(open(f"{work}/prefix_{cache}_{r}.hits").read() or 0)
            for r in range(1, rounds + 1)]
    med = lambda f: statistics.median(f(j) for j in runs)
    print(f"| {'on' if cache == 'true' else 'off'} | {med(lambda j: j['ttft_ms']['p50']):.0f} / "
          f"{med(lambda j: j['ttft_ms']['p99']):.0f} | {med(lambda j: j['e2e_ms']['p50']):.0f} | "
          f"{med(lambda j: j['output_tokens_per_s']):.1f} | {statistics.median(hits):.0f} |")
print(f"(medians of {rounds} rounds)")
PY
