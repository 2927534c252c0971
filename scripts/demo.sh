#!/usr/bin/env bash
# The main job: installs what is missing, builds, tokenizes the bundled corpus, trains the tiny
# model (configs/tiny.yaml), plots its loss curve and generates text from it.
# Extra arguments are --set overrides for training, e.g. scripts/demo.sh train.steps=100
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
export OMP_WAIT_POLICY=PASSIVE
bin=build/apps
sets=()
for kv in "$@"; do sets+=(--set "$kv"); done

echo "== tokenize data/shakespeare.txt (a 4096-token BPE trained on it)"
$bin/tessera-data prepare --input data/shakespeare.txt --vocab-size 4096 --out-dir out/tiny/data --if-missing

echo "== train configs/tiny.yaml"
$bin/tessera-train configs/tiny.yaml "${sets[@]}"

echo "== plot out/tiny/loss.png"
/usr/bin/python3 scripts/plot_metrics.py out/tiny/metrics.jsonl out/tiny/loss.png

echo "== generate"
$bin/tessera-generate out/tiny/model.tsw --prompt "ROMEO:" --max-tokens 200 --temperature 0.8 --top-k 40 --seed 7
