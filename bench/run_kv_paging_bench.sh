#!/usr/bin/env bash
# What the paged KV cache (docs/SERVING.md "KV cache: paged") buys: sequences per MiB. GPT-2 124M
# fp32 on this CPU (the checkpoint of run_serve_bench.sh), tessera-serve at 1 x 1, three
# settings, in interleaved rounds (a fresh server each time):
#   whole-16   --max-sequences 16, no budget: 16 whole contexts (1024 positions each) allocated
#   whole-64   --max-sequences 64, no budget: 64 whole contexts
#   paged-64   --max-sequences 64 --kv-cache-mb (whole-16's KV memory): the same 64 sequences in
#              the blocks their 64 + 128 positions reach
# Load: CONCURRENCY clients (16 for whole-16, 64 for the others) send REQUESTS greedy requests
# each of 64 prompt tokens and 128 new ones. Reported per setting: the KV cache allocated
# (tessera_kv_cache_allocated_bytes), the server's peak resident memory (VmHWM), output tok/s,
# TTFT p50 / p99 and TPOT p50; medians over rounds.
# Usage: bench/run_kv_paging_bench.sh [APPS_DIR]   (default build/apps)
# Environment: THREADS (default: all cores), ROUNDS (default 3), REQUESTS (default 64),
# WORK (default /tmp/tessera-serve-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-64}
source bench/serve_bench_lib.sh "$@"

# One position of 124M's KV cache: k and v, 12 layers, 768 channels, fp32.
per_position=$((2 * 12 * 768 * 4))
whole16_mb=$((16 * 1024 * per_position / 1048576))

peak_kib() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$server/status"; }

for round in $(seq 1 "$ROUNDS"); do
  for setting in whole-16 whole-64 paged-64; do
    case $setting in
      whole-16) args=(--max-sequences 16) clients=16 ;;
      whole-64) args=(--max-sequences 64) clients=64 ;;
      paged-64) args=(--max-sequences 64 --kv-cache-mb "$whole16_mb") clients=64 ;;
    esac
    serve_start "$WORK/paging.log" "${args[@]}" --max-queue 256
    load --concurrency 1 --requests 1 --index-offset 200000 > /dev/null  # warm-up
    load --concurrency "$clients" --requests "$REQUESTS" --index-offset $((round * 1000)) \
      --json "$WORK/paging_${setting}_$round.json" > /dev/null
    curl -s "http://127.0.0.1:$port/metrics" \
      | sed -n 's/^tessera_kv_cache_allocated_bytes \(.*\)/\1/p' > "$WORK/paging_${setting}_$round.kv"
    peak_kib > "$WORK/paging_${setting}_$round.rss"
    serve_stop
  done
done

$PY - "$WORK" "$ROUNDS" << 'PY'
import json
import statistics
import sys

work, rounds = sys.argv[1], int(sys.argv[2])
print("| setting | KV cache allocated (MiB) | peak RSS (MiB) | output tok/s | TTFT p50 / p99 (ms) "
      "| TPOT p50 (ms) |")
print("|---|---|---|---|---|---|")
for setting in ("whole-16", "whole-64", "paged-64"):
    runs = [json.load(open(f"{work}/paging_{setting}_{r}.json")) for r in range(1, rounds + 1)]
    kv = [float(open(f"{work}/paging_{setting}_{r}.kv").read()) for r in range(1, rounds + 1)]
    rss = [float(open(f"{work}/paging_{setting}_{r}.rss").read()) for r in range(1, rounds + 1)]
    med = lambda f: statistics.median(f(j) for j in runs)
    print(f"| {setting} | {statistics.median(kv) / 1048576:.0f} | "
          f"{statistics.median(rss) / 1024:.0f} | {med(lambda j: j['output_tokens_per_s']):.1f} | "
          f"{med(lambda j: j['ttft_ms']['p50']):.0f} / {med(lambda j: j['ttft_ms']['p99']):.0f} | "
          f"{med(lambda j: j['tpot_ms']['p50']):.1f} |")
print(f"(medians of {rounds} rounds)")
PY
