#!/usr/bin/env bash
# Checkpoint bandwidth of the 124M model with AdamW state at 1, 2 and 4 ranks (tp = N and
# dp = N), in one run. bench_checkpoint --dd times, after every checkpoint write (read), `dd`
# writing (reading) the same number of bytes in the same directory, so Tessera and dd alternate
# and share the disk's moods. Beside them, per rank count: raw MPI-IO of the same bytes
# (--mode mpiio: the ceiling without HDF5 and checksums). Tessera runs with both
# checkpoint.transfers modes. Medians of REPS each; the ratios are
# the medians of each repetition's pair (Tessera, then dd right after), since the disk's speed
# drifts between repetitions.
# When this process may drop the page cache (root, not forbidden by a container) every write
# and read starts from a synced, empty cache; otherwise reads come from the page cache for
# Tessera and dd alike, and the output says so. Prints each JSON line as it comes, then a
# markdown table; deletes its files.
# Usage: bench/run_ckpt_bench.sh [DIR]   (DIR on the disk to measure, default out/ckpt-bench;
# build with -DTESSERA_BENCH=ON first; TESSERA_BUILD_DIR=build-x for another build, REPS=n,
# CONFIG=path another model)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${TESSERA_BUILD_DIR:-build}/bench
dir=${1:-out/ckpt-bench}
reps=${REPS:-5}
config=${CONFIG:-configs/gpt2-124m.yaml}
[[ -x $bin/bench_checkpoint ]] || {
  echo "run_ckpt_bench: $bin/bench_checkpoint not found; build with -DTESSERA_BENCH=ON" >&2
  exit 1
}
mkdir -p "$dir"
if [[ $EUID -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
out=$(mktemp -d)
trap 'rm -rf "$out"; rm -f "$dir/dd.bin" "$dir/bench_checkpoint.h5" "$dir/bench_checkpoint.h5.tmp"' EXIT

drop=()
if sync && (echo 3 > /proc/sys/vm/drop_caches) 2> /dev/null; then drop=(--drop-caches); fi

# tag ranks [env VAR=value ...] bench_checkpoint-args...: one run, its JSON line tagged.
ckpt() {
  local tag=$1 n=$2
  shift 2
  local envs=()
  while [[ $# -gt 0 && $1 == *=* ]]; do
    envs+=("$1")
    shift
  done
  env "${envs[@]}" mpirun -n "$n" --oversubscribe --bind-to none "$bin/bench_checkpoint" \
    --config "$config" --dir "$dir" --reps "$reps" --threads 0 "${drop[@]}" "$@" |
    sed -u "s/^{/{\"case\":\"$tag\",\"ranks\":$n,\"env\":\"${envs[*]}\",/" | tee -a "$out/rows.jsonl"
}

dev=$(df "$dir" | awk 'NR == 2 {print $1}')
echo "# $(lscpu | grep 'Model name' | sed 's/ \+/ /g'), $(getconf _NPROCESSORS_ONLN) cores," \
  "$(free -g | awk '/Mem:/ {print $2}') GiB; $(mpirun --version | head -1)"
echo "# threads per rank: cores / ranks, as the apps set them (checksums on a worker thread)"
echo "# disk: $(df -hT "$dir" | awk 'NR == 2 {print $1, $2, $3 " total,", $5 " free"}')," \
  "rotational=$(lsblk -dno ROTA "$dev" 2> /dev/null | tr -d ' ' || echo '?')"
if [[ ${#drop[@]} -gt 0 ]]; then
  echo "# page cache dropped before every write and read (cold reads)"
else
  echo "# page cache could NOT be dropped: reads come from the page cache, Tessera and dd alike"
fi
for n in 1 2 4; do
  echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  for transfers in independent collective; do
    ckpt "tessera" "$n" --tp "$n" --transfers "$transfers" --dd
    if [[ $n -gt 1 ]]; then ckpt "tessera" "$n" --tp 1 --transfers "$transfers" --dd; fi
  done
  ckpt "mpiio" "$n" --tp "$n" --mode mpiio --dd
done
echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$out/rows.jsonl" "${#drop[@]}" << 'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
med = statistics.median
print()
print("reads: " + ("cold (page cache dropped before each)" if sys.argv[2] != "0"
                   else "from the page cache (it could not be dropped), Tessera and dd alike"))
print("| ranks | grid | what | write GB/s | dd write GB/s | write / dd, paired | read GB/s | dd read GB/s "
      "| read / dd, paired |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    if r["case"] == "tessera":
        what = f"write_checkpoint / read_checkpoint, {r['transfers']} transfers"
    else:
        what = "raw MPI-IO, same bytes (no HDF5, no checksum)"
    w, rd = r["write_vs_dd_paired"], r["read_vs_dd_paired"]
    print(f"| {r['ranks']} | dp{r['dp']} x tp{r['tp']} | {what} | {r['write_gbps']:.2f} "
          f"| {r['dd_write_gbps']:.2f} | {w:.0%} | {r['read_gbps']:.2f} | {r['dd_read_gbps']:.2f} "
          f"| {rd:.0%} |")
b = rows[0]["file_bytes"]
print(f"\nfile: {b} bytes ({b / 1e9:.2f} GB); checksum pass of a write, slowest rank (s):",
      ", ".join(f"{r['ranks']}:dp{r['dp']}xtp{r['tp']} {r['checksum_s']:.2f}"
                for r in rows if r["case"] == "tessera" and r["transfers"] == "independent"))
EOF
