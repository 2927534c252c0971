#!/usr/bin/env bash
# DP weak scaling on 2 ranks (issue 17): per round, back to back, 1 rank; dp = 2 with the
# replicated optimizer over MPI (zero0-mpi: bucketed all-reduces overlapped with backward, the
# trainer's default) and through node-shared arenas (zero0-shared: --node-shared, what
# optim.zero 0 does with parallel.node_shared=on); dp = 2
# with ZeRO-1 over MPI (zero1-mpi: ring reduce-scatter during backward, all-gather after the
# step) and through node-shared arenas (zero1-shared: --zero 1 --node-shared, optim.zero 1's
# default on one node); and two independent 1-rank runs at once (the machine's share for two
# ranks, no communication). Efficiency = dp tok/s / (2 x 1-rank tok/s).
# VARIANTS=old adds the reducer before issue 17 (--no-poll --dense-embedding --average-pass).
# Every run is in its own session at autogroup nice -19: the kernel shares the CPUs fairly
# between sessions (autogroups) and ignores nice across them, so on a machine where others
# compile this is what gives the ranks whole cores (check the sgemm column: ~100 GFLOP/s a rank).
# Usage: bench/run_dp_scaling_bench.sh [rounds]   (TESSERA_BUILD_DIR, CONFIG, B, T, STEPS)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${TESSERA_BUILD_DIR:-build}/bench/bench_grid
rounds=${1:-3}
[[ -x $bin ]] || { echo "run_dp_scaling_bench: $bin not found; build bench_grid" >&2; exit 1; }
if [[ $EUID -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
args=(--config "${CONFIG:-configs/gpt2-124m.yaml}" --seq "${T:-64}" --batch-per-rank "${B:-2}"
      --steps "${STEPS:-4}" --warmup 1 --threads 1)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# prio command...: runs it in a new session whose autogroup has nice -19 (root only; else as is).
prio() {
  if [[ $EUID -eq 0 ]]; then
    setsid -w bash -c 'echo -19 > /proc/self/autogroup; exec "$@"' prio "$@"
  else
    "$@"
  fi
}
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
row() {  # tag json
  python3 -c 'import json,sys; d=json.load(open(sys.argv[2]))
print("%-22s tok/s %8.1f  step ms %7.0f  sgemm %5.0f" % (sys.argv[1], d["tokens_per_s"],
      d["step_ms_median"], d["sgemm_gflops"]))' "$@"
}

echo "# $(lscpu | grep 'Model name' | sed 's/ \+/ /g'); ${args[*]}"
for r in $(seq "$rounds"); do
  echo "# round $r, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%T) UTC"
  prio mpirun -n 1 --bind-to none "$bin" "${args[@]}" > "$out/one.json"
  variants=(zero0-mpi zero0-shared zero1-mpi zero1-shared)
  prio mpirun -n 2 --oversubscribe --bind-to none "$bin" "${args[@]}" > "$out/zero0-mpi.json"
  prio mpirun -n 2 --oversubscribe --bind-to none "$bin" "${args[@]}" --node-shared \
    > "$out/zero0-shared.json"
  prio mpirun -n 2 --oversubscribe --bind-to none "$bin" "${args[@]}" --zero 1 \
    > "$out/zero1-mpi.json"
  prio mpirun -n 2 --oversubscribe --bind-to none "$bin" "${args[@]}" --zero 1 --node-shared \
    > "$out/zero1-shared.json"
  if [[ ${VARIANTS:-} == old ]]; then
    variants+=(old)
    prio mpirun -n 2 --oversubscribe --bind-to none "$bin" "${args[@]}" --no-poll \
      --dense-embedding --average-pass > "$out/old.json"
  fi
  prio bash -c "mpirun -n 1 --bind-to none $bin ${args[*]} > $out/pa.json &
                mpirun -n 1 --bind-to none $bin ${args[*]} > $out/pb.json; wait"
  one=$(field "$out/one.json" tokens_per_s)
  row "1 rank" "$out/one.json"
  for v in "${variants[@]}"; do
    row "dp 2 ($v)" "$out/$v.json"
    echo "  efficiency $(python3 -c "print(f'{$(field "$out/$v.json" tokens_per_s) / (2 * $one):.1%}')")"
  done
  pair=$(python3 -c "print($(field "$out/pa.json" tokens_per_s) + $(field "$out/pb.json" tokens_per_s))")
  echo "independent pair       tok/s $(printf '%8.1f' "$pair")  ($(python3 -c "print(f'{$pair / (2 * $one):.1%}')") of 2 x 1 rank)"
done
