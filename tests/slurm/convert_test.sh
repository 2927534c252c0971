#!/usr/bin/env bash
# scripts/slurm/convert.sbatch: the job COMPLETES and writes the same llm.c file as
# tessera-ckpt convert run directly.
source "$(dirname "$0")/lib.sh"
require_cluster
make_small_data "$WORK/data"
"$TESSERA_BIN/tessera-train" "$TESSERA_ROOT/configs/tiny.yaml" $(small_sets "$WORK/data") \
  --set train.steps=3 --set train.val_every=0 --set checkpoint.dir="$WORK/ckpt" \
  > "$WORK/train.log" 2>&1 ||
  { cat "$WORK/train.log"; fail "training the checkpoint to convert"; finish; exit 1; }
ckpt=$WORK/ckpt/step_00000003.h5

id=$(submit "$SLURM_SCRIPTS/convert.sbatch" "$ckpt" "$WORK/slurm.bin" --to llmc) ||
  { fail "sbatch convert.sbatch: $id"; finish; exit 1; }
read -r state code < <(wait_job "$id" 120)
out=$(job_output tessera-convert "$id")
[[ $state == COMPLETED && $code == 0:0 ]] && pass "job $id COMPLETED (exit $code)" ||
  { fail "job $id ended $state (exit $code):"; sed 's/^/    /' "$out"; }
"$TESSERA_BIN/tessera-ckpt" convert "$ckpt" "$WORK/direct.bin" --to llmc > "$WORK/direct.log" 2>&1 ||
  { cat "$WORK/direct.log"; fail "tessera-ckpt convert run directly"; }
[[ -s $WORK/slurm.bin ]] && cmp -s "$WORK/slurm.bin" "$WORK/direct.bin" &&
  pass "job wrote the same llm.c file ($(stat -c %s "$WORK/slurm.bin") bytes)" ||
  fail "the job's llm.c file is missing or differs from a direct conversion"
finish
