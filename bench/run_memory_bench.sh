#!/usr/bin/env bash
# Memory per rank with and without ZeRO-1 (optim.zero) and sequence parallelism
# (parallel.sequence_parallel, at tp > 1), GPT-2 124M and 350M, at 1, 2 and 4 ranks (dp = ranks,
# dp 1 x tp 2 at 2, dp 2 x tp 2 at 4): bench_grid runs a couple of training steps (1 sequence of 64
# tokens per rank: the model's state, not its activations, is what is measured) and reports its
# arenas (weights, gradients, AdamW moments, activations) and the peak resident set of the
# largest rank. Prints each JSON line, then a markdown table.
# Usage: bench/run_memory_bench.sh   (after scripts/build.sh; TESSERA_BUILD_DIR=build-x for another
# build; CONFIGS="gpt2-124m gpt2-350m" to choose models, LAYOUTS="1 1,2 1,2 2,4 1,4 2" ranks and
# tp; SEQ=64 tokens per sequence)
# Cases whose ranks together would need more than this machine's memory (24 GiB: 350M at dp 4
# without ZeRO needs ~23 GiB of state alone) are skipped and said so.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${TESSERA_BUILD_DIR:-build}/bench
[[ -x $bin/bench_grid ]] || { echo "run_memory_bench: $bin/bench_grid not found; run scripts/build.sh" >&2; exit 1; }
if [[ $EUID -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
configs=${CONFIGS:-gpt2-124m gpt2-350m}
IFS=, read -r -a layouts <<< "${LAYOUTS:-1 1,2 1,2 2,4 1,4 2}"
seq=${SEQ:-64}
mem_kib=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo '?'), load average $(cut -d' ' -f1-3 /proc/loadavg), $((mem_kib / 1024 / 1024)) GiB"

# Parameters of a config, for the fit check: 16 bytes each per rank (weights, gradients, m, v)
# divided by tp, with the moments divided by dp under ZeRO-1.
params_of() { case $1 in gpt2-124m) echo 124 ;; gpt2-350m) echo 355 ;; *) echo 0 ;; esac; }
for cfg in $configs; do
  p=$(params_of "$cfg")
  for layout in "${layouts[@]}"; do
    read -r n tp <<< "$layout"
    dp=$((n / tp))
    for zero in 0 1; do
      ((dp == 1 && zero == 1)) && continue  # nothing to shard over one dp rank
      for sp in "" --sequence-parallel; do
        [[ -n $sp && $tp == 1 ]] && continue
        moments=$((zero == 1 ? 8 * p / tp / dp : 8 * p / tp))
        need_mib=$((n * (8 * p / tp + moments) * 1000000 / 1048576 + n * 400))
        if ((need_mib * 1024 > mem_kib * 85 / 100)); then
          echo "{\"config\":\"$cfg\",\"world\":$n,\"dp\":$dp,\"tp\":$tp,\"zero\":$zero,\"skipped\":\"needs ~$((need_mib / 1024)) GiB of $((mem_kib / 1024 / 1024))\"}" | tee -a "$out"
          continue
        fi
        mpirun -n "$n" --oversubscribe --bind-to none "$bin/bench_grid" --config "configs/$cfg.yaml" \
          --batch-per-rank 1 --seq "$seq" --tp "$tp" --steps 1 --warmup 1 --threads 1 \
          --zero "$zero" $sp | sed -u "s/^{/{\"cfg\":\"$cfg\",/" | tee -a "$out"
      done
    done
  done
done

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("\n| model | ranks | dp x tp | zero | sp | weights | grads | moments | activations | arenas | peak RSS (largest rank) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    cfg = r.get("cfg", r.get("config"))
    if "skipped" in r:
        print(f"| {cfg} | {r['world']} | {r['dp']} x {r['tp']} | {r['zero']} | | | | | | | not run: {r['skipped']} |")
        continue
    arenas = r["weights_mib"] + r["grads_mib"] + r["moments_mib"] + r["activations_mib"]
    sp = "on" if r.get("sequence_parallel") else "off"
    print(f"| {cfg} | {r['world']} | {r['dp']} x {r['tp']} | {r['zero']} | {sp} | {r['weights_mib']:.0f} | "
          f"{r['grads_mib']:.0f} | {r['moments_mib']:.0f} | {r['activations_mib']:.0f} | {arenas:.0f} | "
          f"{r['peak_rss_mib_max_rank']:.0f} |")
print("\nMiB per rank.")
PY
