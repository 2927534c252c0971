#!/usr/bin/env bash
# What train.sbatch's --signal=USR1@120 relies on: SIGUSR1 to the job's tasks makes tessera-train
# write a checkpoint and end the job cleanly (COMPLETED); a second job with --resume continues
# from that step and its own first metrics record names the second job.
source "$(dirname "$0")/lib.sh"
require_cluster
make_small_data "$WORK/data"
sets="$(small_sets "$WORK/data") --set parallel.tp=2 --set train.val_every=0"
sets+=" --set checkpoint.dir=$WORK/ckpt --set train.out_dir=$WORK/run"

id=$(submit --nodes=2 --ntasks-per-node=2 "$SLURM_SCRIPTS/train.sbatch" \
  "$TESSERA_ROOT/configs/tiny.yaml" $sets --set train.steps=100000) ||
  { fail "sbatch train.sbatch: $id"; finish; exit 1; }
# Signal once training runs (the handler is installed before the first step).
for ((i = 0; i < 600; i++)); do
  [[ -s $WORK/run/metrics.jsonl ]] && (($(wc -l < "$WORK/run/metrics.jsonl") >= 3)) && break
  sleep 0.2
done
scancel --signal=USR1 "$id"
read -r state code < <(wait_job "$id" 120)
out=$(job_output tessera-train "$id")
[[ $state == COMPLETED && $code == 0:0 ]] && pass "signalled job $id COMPLETED (exit $code)" ||
  { fail "signalled job $id ended $state (exit $code):"; sed 's/^/    /' "$out"; }
stopped=$(grep -Eo 'stopping after step [0-9]+ on a signal' "$out" | grep -Eo '[0-9]+')
[[ -n $stopped && -e $WORK/ckpt/latest ]] && pass "checkpoint written at step $stopped" ||
  { fail "no checkpoint-and-stop on SIGUSR1:"; tail -5 "$out"; finish; exit 1; }

total=$((stopped + 3))
id2=$(submit --nodes=2 --ntasks-per-node=2 "$SLURM_SCRIPTS/train.sbatch" \
  "$TESSERA_ROOT/configs/tiny.yaml" $sets --set train.steps=$total --resume) ||
  { fail "sbatch train.sbatch --resume: $id2"; finish; exit 1; }
read -r state code < <(wait_job "$id2" 120)
out2=$(job_output tessera-train "$id2")
[[ $state == COMPLETED && $code == 0:0 ]] && pass "resumed job $id2 COMPLETED" ||
  { fail "resumed job $id2 ended $state (exit $code):"; sed 's/^/    /' "$out2"; }
grep -Eq "resumed from .* at step $stopped\$" "$out2" && pass "resumed at step $stopped" ||
  fail "no 'resumed from ... at step $stopped' in $out2"
/usr/bin/python3 - "$WORK/run/metrics.jsonl" "$id" "$id2" "$stopped" "$total" << 'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
first, second, stopped, total = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
steps = [r["step"] for r in recs]
jobs = {r["step"]: r["slurm_job_id"] for r in recs if "slurm_job_id" in r}
ok = steps == list(range(1, total + 1)) and jobs == {1: first, stopped + 1: second}
print(f"steps 1..{total} in order, job ids {jobs}" if ok else f"steps {steps}, job ids {jobs}")
sys.exit(0 if ok else 1)
PY
[[ $? -eq 0 ]] && pass "metrics.jsonl continues, each job named at its first step" ||
  fail "metrics.jsonl after resume"
finish
