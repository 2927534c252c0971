#!/usr/bin/env bash
# scripts/slurm/generate.sbatch on one node, tp 2: the job COMPLETES and its output holds the
# prompt and the very text the same command prints under mpirun -n 2.
source "$(dirname "$0")/lib.sh"
require_cluster
make_small_data "$WORK/data"
"$TESSERA_BIN/tessera-train" "$TESSERA_ROOT/configs/tiny.yaml" $(small_sets "$WORK/data") \
  --set train.steps=5 --set train.val_every=0 > "$WORK/train.log" 2>&1 ||
  { cat "$WORK/train.log"; fail "training the model to generate from"; finish; exit 1; }
args=("$WORK/run/model.h5" --tp 2 --prompt "ROMEO:" --max-tokens 24 --ignore-eot
  --temperature 0.8 --top-k 40 --seed 7)

id=$(submit "$SLURM_SCRIPTS/generate.sbatch" "${args[@]}") ||
  { fail "sbatch generate.sbatch: $id"; finish; exit 1; }
read -r state code < <(wait_job "$id" 120)
out=$(job_output tessera-generate "$id")
[[ $state == COMPLETED && $code == 0:0 ]] && pass "job $id COMPLETED (exit $code)" ||
  { fail "job $id ended $state (exit $code):"; sed 's/^/    /' "$out"; }
text=$("${mpirun[@]}" -n 2 "$TESSERA_BIN/tessera-generate" "${args[@]}" 2> "$WORK/gen.err") ||
  { cat "$WORK/gen.err"; fail "mpirun -n 2 tessera-generate"; }
[[ $text == ROMEO:* && ${#text} -gt 20 ]] && pass "mpirun text: ${text//$'\n'/ }" ||
  fail "mpirun text does not continue the prompt: [$text]"
[[ "$(cat "$out")" == *"$text"* ]] && pass "job output holds the same text" ||
  { fail "job output differs from mpirun's text:"; sed 's/^/    /' "$out"; }
finish
