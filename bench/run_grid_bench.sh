#!/usr/bin/env bash
# The 2D-grid benchmarks on one machine, back to back, with PyTorch DDP (gloo) beside them:
#  (a) dp weak scaling, 1 rank vs 2 ranks (dp = 2), same per-rank batch, tiny and 124M, with
#      two independent 1-rank runs at once as the control (the machine's share, no communication);
#  (b) bench_reducer at 2 ranks: the reducer against one raw MPI_Allreduce of the same bytes;
#  (c) the share of bucket all-reduce time inside backward at dp = 2, overlap on and off (124M);
#  (d) tp = 2 against dp = 2 on 2 ranks, same global batch, tiny and 124M;
#  (e) PyTorch DDP at 1 and 2 ranks on (a)'s shapes.
# Every rank runs 1 thread. Prints each JSON line as it comes, then a markdown summary.
# Usage: bench/run_grid_bench.sh   (after scripts/build.sh; TESSERA_BUILD_DIR=build-x for
# another build; TINY_STEPS, BIG_STEPS, BIG_B change the timed steps and the 124M per-rank batch)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${TESSERA_BUILD_DIR:-build}/bench
tiny_steps=${TINY_STEPS:-10}
big_steps=${BIG_STEPS:-3}
big_b=${BIG_B:-2}
for exe in bench_grid bench_reducer; do
  [[ -x $bin/$exe ]] || { echo "run_grid_bench: $bin/$exe not found; run scripts/build.sh" >&2; exit 1; }
done
if [[ $EUID -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

load() { echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/load.txt"; }
# tag ranks bench_grid-args...: one bench_grid run, its JSON line tagged with the case.
grid() {
  local tag=$1 n=$2
  shift 2
  mpirun -n "$n" --oversubscribe --bind-to none "$bin/bench_grid" --threads 1 "$@" |
    sed -u "s/^{/{\"case\":\"$tag\",/" | tee -a "$out/rows.jsonl"
}
# tag bench_grid-args...: two independent 1-rank runs at once, tagged <tag>-a and <tag>-b: what
# the machine gives two ranks with no communication between them (the control for dp = 2).
pair() {
  local tag=$1
  shift
  mpirun -n 1 --bind-to none "$bin/bench_grid" --threads 1 "$@" > "$out/$tag.a" &
  local pid=$!
  mpirun -n 1 --bind-to none "$bin/bench_grid" --threads 1 "$@" > "$out/$tag.b"
  wait "$pid"
  for h in a b; do
    sed "s/^{/{\"case\":\"$tag-$h\",/" "$out/$tag.$h" | tee -a "$out/rows.jsonl"
  done
}
# tag ranks torch_ddp_bench-args...
ddp() {
  local tag=$1 n=$2
  shift 2
  /usr/bin/python3 bench/torch_ddp_bench.py --ranks "$n" --threads 1 "$@" |
    sed -u "s/^{/{\"case\":\"$tag\",/" | tee -a "$out/rows.jsonl"
}

# (nproc would honour OMP_NUM_THREADS=1: ask getconf.)
echo "# $(lscpu | grep 'Model name' | sed 's/ \+/ /g'), $(getconf _NPROCESSORS_ONLN) cores;" \
  "1 thread per rank"
tiny=(--config configs/tiny.yaml --seq 64 --steps "$tiny_steps" --warmup 2)
big=(--config configs/gpt2-124m.yaml --seq 64 --steps "$big_steps" --warmup 1)

load
# (a), (d) tiny: 1 rank; dp = 2 with the same per-rank batch; tp = 2 with dp = 2's global batch.
grid tiny-1 1 "${tiny[@]}" --batch-per-rank 4
pair tiny-pair "${tiny[@]}" --batch-per-rank 4
grid tiny-dp2 2 "${tiny[@]}" --batch-per-rank 4
grid tiny-tp2 2 "${tiny[@]}" --batch-per-rank 8 --tp 2
# (e) tiny
ddp tiny-ddp1 1 --config tiny --seq 64 --steps "$tiny_steps" --warmup 2 --batch-per-rank 4
ddp tiny-ddp2 2 --config tiny --seq 64 --steps "$tiny_steps" --warmup 2 --batch-per-rank 4
load
# (a), (c), (d) 124M: dp = 2 runs with the timeline (overlap on: also (a)'s and (d)'s dp = 2).
grid big-1 1 "${big[@]}" --batch-per-rank "$big_b"
pair big-pair "${big[@]}" --batch-per-rank "$big_b"
grid big-dp2 2 "${big[@]}" --batch-per-rank "$big_b" --timeline "$out/tl-on.json"
grid big-dp2-nooverlap 2 "${big[@]}" --batch-per-rank "$big_b" --no-overlap \
  --timeline "$out/tl-off.json"
grid big-tp2 2 "${big[@]}" --batch-per-rank $((2 * big_b)) --tp 2
# (e) 124M
ddp big-ddp1 1 --config 124m --seq 64 --steps "$big_steps" --warmup 1 --batch-per-rank "$big_b"
ddp big-ddp2 2 --config 124m --seq 64 --steps "$big_steps" --warmup 1 --batch-per-rank "$big_b"
load
# (b)
mpirun -n 2 --oversubscribe --bind-to none "$bin/bench_reducer" --reps 5 --bf16 false |
  tee "$out/reducer.txt"
load

/usr/bin/python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
rows = {}
for line in open(f"{d}/rows.jsonl"):
    if line.startswith("{"):
        r = json.loads(line)
        rows[r["case"]] = r
reducer = [json.loads(l) for l in open(f"{d}/reducer.txt") if l.startswith("{")]
loads = [l.split(": ", 1)[1].strip() for l in open(f"{d}/load.txt")]
tps = lambda c: rows[c]["tokens_per_s"]
# From the fastest timed step: less sensitive to other users' bursts than the median.
best = lambda c: rows[c]["B_global"] * rows[c]["T"] / (rows[c]["step_ms_min"] / 1e3)
# The sgemm peak each Tessera run measured at start (all ranks summed): ~1 core's worth per
# rank when the machine is quiet, less when other work shares it.
peak = lambda c: f"{rows[c]['sgemm_gflops']:.0f}" if "sgemm_gflops" in rows[c] else "-"

print("\n### (a, e) Data-parallel weak scaling, 1 thread per rank")
print("| model | B/rank | T | impl | 1 rank tok/s | 2 ranks tok/s | efficiency "
      "| efficiency, best steps | 2 independent 1-rank runs at once, tok/s (sum) "
      "| 2 ranks / independent pair | sgemm GFLOP/s 1 / 2 ranks |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for m, name in (("tiny", "tiny"), ("big", "gpt2-124m")):
    for impl, one, two in (("Tessera", f"{m}-1", f"{m}-dp2"),
                           ("PyTorch DDP gloo", f"{m}-ddp1", f"{m}-ddp2")):
        r1 = rows[one]
        if impl == "Tessera":
            pair = tps(f"{m}-pair-a") + tps(f"{m}-pair-b")
            control = f"{pair:.1f} | {100 * tps(two) / pair:.0f}%"
        else:
            control = "- | -"
        print(f"| {name} | {r1['B_per_rank']} | {r1['T']} | {impl} | {tps(one):.1f} "
              f"| {tps(two):.1f} | {100 * tps(two) / (2 * tps(one)):.0f}% "
              f"| {100 * best(two) / (2 * best(one)):.0f}% | {control} "
              f"| {peak(one)} / {peak(two)} |")
print("\nefficiency = tokens/s(2 ranks) / (2 x tokens/s(1 rank)), tokens/s from the median "
      "step (best steps: from the fastest step); goal >= 95%")

print("\n### (b) Gradient reducer vs one raw MPI_Allreduce of the same bytes, 2 ranks")
print("| model | floats | buckets (cap MiB) | reducer ms | raw MPI_Allreduce ms | reducer at |")
print("|---|---|---|---|---|---|")
for r in reducer:
    print(f"| {r['model']} | {r['floats']} | {r['buckets']} ({r['bucket_mb']:g}) "
          f"| {r['reducer_ms']:.1f} | {r['raw_allreduce_ms']:.1f} "
          f"| {100 * r['reducer_vs_raw']:.0f}% of raw |")
print("\ngoal: reducer >= 95% of raw MPI_Allreduce")

print("\n### (c) Overlap at dp = 2, gpt2-124m, rank 0's timeline over the timed steps")
print("| overlap | buckets (cap MiB) | step ms (median / best) | all-reduce inside backward "
      "| all-reduce wall ms/step | backward ms/step | finish() wait ms/step | sgemm GFLOP/s |")
print("|---|---|---|---|---|---|---|---|")
for c, label in (("big-dp2", "on"), ("big-dp2-nooverlap", "off")):
    r = rows[c]
    print(f"| {label} | {r['buckets']} ({r['bucket_mb']:g}) | {r['step_ms_median']:.0f} "
          f"/ {r['step_ms_min']:.0f} | {100 * r['overlap_fraction']:.0f}% "
          f"(mean of ranks {100 * r['overlap_fraction_mean_ranks']:.0f}%) "
          f"| {r['allreduce_wall_ms_per_step']:.0f} | {r['backward_ms_per_step']:.0f} "
          f"| {r['finish_wait_ms_per_step']:.0f} | {peak(c)} |")

print("\n### (d) tp = 2 vs dp = 2 on 2 ranks x 1 thread, same global batch")
print("| model | global B | T | dp=2 tok/s | tp=2 tok/s | tp / dp | tp / dp, best steps "
      "| sgemm GFLOP/s dp / tp |")
print("|---|---|---|---|---|---|---|---|")
for m, name in (("tiny", "tiny"), ("big", "gpt2-124m")):
    dp, tp = f"{m}-dp2", f"{m}-tp2"
    print(f"| {name} | {rows[dp]['B_global']} | {rows[dp]['T']} | {tps(dp):.1f} | {tps(tp):.1f} "
          f"| {tps(tp) / tps(dp):.2f} | {best(tp) / best(dp):.2f} | {peak(dp)} / {peak(tp)} |")

print("\nload average (1, 5, 15 min) before tiny, before 124M, before reducer, at the end: "
      + "; ".join(loads))
PY
