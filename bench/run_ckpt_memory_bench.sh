#!/usr/bin/env bash
# Peak resident memory per rank of a short tessera-train run that writes a checkpoint, against
# the same run without one, with and without ZeRO-1 (optim.zero), GPT-2 124M at dp 2 and dp 4:
# what a checkpoint write adds to the training state's footprint (issue 17: the sharded moments
# must not be gathered whole for the write). Each rank runs under /usr/bin/time; the table gives
# the largest rank's peak. 2 steps of 1 sequence of 64 tokens per rank, then the final
# checkpoint (without checkpoint.dir none: only the final weights file); the data are 200 kB of
# data/shakespeare.txt (a 512-token BPE: its ids are valid in GPT-2's 50257-token embedding, and
# memory does not depend on them).
# Usage: bench/run_ckpt_memory_bench.sh   (after scripts/build.sh; TESSERA_BUILD_DIR=build-x for
# another build, TESSERA_TRAIN=path to time another tessera-train binary, RANKS="2 4",
# ZERO="0 1", CONFIG=gpt2-124m)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${TESSERA_BUILD_DIR:-build}
train=${TESSERA_TRAIN:-$build/apps/tessera-train}
[[ -x $train && -x $build/apps/tessera-data ]] || {
  echo "run_ckpt_memory_bench: $train or $build/apps/tessera-data not found; run scripts/build.sh" >&2
  exit 1
}
if [[ $EUID -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
config=${CONFIG:-gpt2-124m}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $train, load average $(cut -d' ' -f1-3 /proc/loadavg)"

head -c 200000 data/shakespeare.txt > "$work/small.txt"
"$build/apps/tessera-data" prepare --input "$work/small.txt" --vocab-size 512 \
  --out-dir "$work/data" > "$work/prepare.log" 2>&1 || { cat "$work/prepare.log"; exit 1; }

echo "| model | ranks (dp) | zero | checkpoint | peak RSS, largest rank (MiB) |"
echo "|---|---|---|---|---|"
for n in ${RANKS:-2 4}; do
  for zero in ${ZERO:-0 1}; do
    for ck in "" "$work/ckpt"; do
      rm -rf "$work/run" "$work/ckpt"
      log="$work/train-$n-$zero-${ck:+ckpt}.log"
      if ! mpirun -n "$n" --oversubscribe --bind-to none /usr/bin/time -f "peak_rss_kib %M" \
        "$train" "configs/$config.yaml" --set data.train="$work/data/train.bin" \
        --set data.val="$work/data/val.bin" --set data.tokenizer="$work/data/tokenizer" \
        --set train.seq_len=64 --set train.batch_size="$n" --set train.steps=2 \
        --set train.val_every=0 --set train.out_dir="$work/run" --set checkpoint.dir="$ck" \
        --set optim.zero="$zero" > "$log" 2>&1; then
        cat "$log" >&2
        exit 1
      fi
      if [[ -n $ck ]] && ! ls "$work/ckpt"/step_*.h5 > /dev/null 2>&1; then
        echo "run_ckpt_memory_bench: no checkpoint written ($log)" >&2
        exit 1
      fi
      peak=$(grep -o 'peak_rss_kib [0-9]*' "$log" | awk '$2 > m { m = $2 } END { printf "%.0f", m / 1024 }')
      label=none
      [[ -n $ck ]] && label="written after step 2"
      echo "| $config | $n | $zero | $label | $peak |"
    done
  done
done
