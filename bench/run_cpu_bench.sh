#!/usr/bin/env bash
# Tessera against PyTorch (Debian's python3-torch) on the CPU, same GPT-2 shapes, same threads,
# back to back in one run. Prints one JSON line per measurement and a summary table.
# Usage: bench/run_cpu_bench.sh [threads] [--long]    (--long adds the 124M shape at T=1024)
# Needs: scripts/build.sh, scripts/setup.sh (installs PyTorch).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
long=${2:-}
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
out=$(mktemp)
run() {  # config-file torch-config B T steps warmup
  build/bench/bench_train --config "$1" --batch "$3" --seq "$4" --steps "$5" --warmup "$6" \
    --threads "$threads" | tee -a "$out"
  /usr/bin/python3 bench/torch_train_bench.py --config "$2" --batch "$3" --seq "$4" \
    --steps "$5" --warmup "$6" --threads "$threads" | tee -a "$out"
}
echo "# $(lscpu | grep 'Model name' | sed 's/ \+/ /g'), $(nproc) cores; threads per run: $threads"
run configs/tiny.yaml tiny 4 64 20 3
run configs/gpt2-124m.yaml 124m 4 64 5 1
if [[ "$long" == "--long" ]]; then
  run configs/gpt2-124m.yaml 124m 4 1024 2 1
fi
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("\n| shape | B | T | Tessera tok/s | PyTorch tok/s | ratio | Tessera MFU |")
print("|---|---|---|---|---|---|---|")
for t, p in zip(rows[0::2], rows[1::2]):
    print(f"| {p['config']} | {t['B']} | {t['T']} | {t['tokens_per_s']:.1f} | {p['tokens_per_s']:.1f} "
          f"| {t['tokens_per_s'] / p['tokens_per_s']:.2f}x | {100 * t['mfu']:.1f}% |")
PY
rm -f "$out"
