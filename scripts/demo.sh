#!/usr/bin/env bash
# The main job: installs what is missing, builds the three CPU apps it runs (build-cpu/; not the
# tests, benchmarks or CUDA kernels), tokenizes the bundled corpus, trains the tiny model
# (configs/tiny.yaml) on a 2 x 2 grid (4 MPI ranks: dp 2 x tp 2), plots its loss curve and
# generates text from it with tp = 2. Each phase prints the time since the start.
# Extra arguments are --set overrides for training, e.g. scripts/demo.sh train.steps=100
set -euo pipefail
cd "$(dirname "$0")/.."
phase() { printf '== [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

phase "check the Debian packages (scripts/setup.sh)"
scripts/setup.sh
phase "build tessera-data, tessera-train, tessera-generate (CPU) in build-cpu/; the first time" \
  "about 3 minutes on 2 cores, then only what changed"
scripts/build.sh --apps tessera-data tessera-train tessera-generate
export OMP_WAIT_POLICY=PASSIVE
# Open MPI refuses root unless told; more ranks than cores need --oversubscribe.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun=(mpirun --oversubscribe --bind-to none)
bin=build-cpu/apps
sets=()
for kv in "$@"; do sets+=(--set "$kv"); done

phase "tokenize data/shakespeare.txt (a 4096-token BPE trained on it)"
$bin/tessera-data prepare --input data/shakespeare.txt --vocab-size 4096 --out-dir out/tiny/data --if-missing

phase "train configs/tiny.yaml on 4 ranks: dp 2 x tp 2"
"${mpirun[@]}" -n 4 $bin/tessera-train configs/tiny.yaml --set parallel.tp=2 "${sets[@]}"

phase "plot out/tiny/loss.png"
/usr/bin/python3 scripts/plot_metrics.py out/tiny/metrics.jsonl out/tiny/loss.png

phase "generate with tp = 2"
"${mpirun[@]}" -n 2 $bin/tessera-generate out/tiny/model.h5 --tp 2 --prompt "ROMEO:" --max-tokens 200 --temperature 0.8 --top-k 40 --seed 7
phase "done"
