#!/usr/bin/env bash
# scripts/slurm/train.sbatch on 2 emulated nodes x 2 tasks (dp 2 x tp 2, each tp group inside a
# node): the job COMPLETES, its log shows the grid, the Slurm job and the losses, metrics.jsonl
# records the job, and every loss equals the same run under mpirun -n 4, bit for bit.
source "$(dirname "$0")/lib.sh"
require_cluster
make_small_data "$WORK/data"
steps=12
# One thread per rank in both runs: under Slurm a node holds 2 ranks, under mpirun this machine 4.
sets="$(small_sets "$WORK/data") --set parallel.tp=2 --set train.steps=$steps --set train.val_every=6"
sets+=" --set train.threads=1"

id=$(submit --nodes=2 --ntasks-per-node=2 "$SLURM_SCRIPTS/train.sbatch" \
  "$TESSERA_ROOT/configs/tiny.yaml" $sets --set train.out_dir="$WORK/slurm-run") ||
  { fail "sbatch train.sbatch: $id"; finish; exit 1; }
read -r state code < <(wait_job "$id" 300)
out=$(job_output tessera-train "$id")
[[ $state == COMPLETED && $code == 0:0 ]] && pass "job $id COMPLETED (exit $code)" ||
  { fail "job $id ended $state (exit $code):"; sed 's/^/    /' "$out"; }
grep -q 'grid: 4 ranks = dp 2 x tp 2' "$out" && pass "log shows the grid" || fail "no grid line in $out"
launch="launch: slurm job $id (tessera-train), step 0, 2 nodes tessera-n[1-2], 2 ranks on this node"
grep -qF "$launch" "$out" && pass "log shows the job, its nodes and 2 ranks per node" ||
  { fail "no line '$launch':"; grep '^launch' "$out"; }
loss_lines() { grep -Eo "^step +[0-9]+/$steps \| loss [0-9.]+" "$1"; }
n=$(loss_lines "$out" | wc -l)
((n >= 2)) && pass "log shows $n loss lines" || fail "log shows $n loss lines, expected 2 or more"

# The same run under mpirun on this machine.
"${mpirun[@]}" -n 4 "$TESSERA_BIN/tessera-train" "$TESSERA_ROOT/configs/tiny.yaml" $sets \
  --set train.out_dir="$WORK/mpirun-run" > "$WORK/mpirun.log" 2>&1 ||
  { cat "$WORK/mpirun.log"; fail "mpirun -n 4 tessera-train"; finish; exit 1; }
[[ "$(loss_lines "$out")" == "$(loss_lines "$WORK/mpirun.log")" ]] &&
  pass "log loss lines equal mpirun's" ||
  fail "log loss lines differ: $(loss_lines "$out" | tail -1) vs $(loss_lines "$WORK/mpirun.log" | tail -1)"
/usr/bin/python3 - "$WORK/slurm-run/metrics.jsonl" "$WORK/mpirun-run/metrics.jsonl" "$id" "$steps" << 'PY'
import json, sys
slurm = [json.loads(l) for l in open(sys.argv[1])]
local = [json.loads(l) for l in open(sys.argv[2])]
job, steps = sys.argv[3], int(sys.argv[4])
keys = ("step", "loss", "val_loss", "grad_norm", "lr")
problems = []
if len(slurm) != steps or len(local) != steps:
    problems.append(f"{len(slurm)} and {len(local)} records, expected {steps}")
for a, b in zip(slurm, local):
    for k in keys:
        if a.get(k) != b.get(k):  # exact: the same arithmetic in the same order
            problems.append(f"step {a.get('step')} {k}: slurm {a.get(k)!r} vs mpirun {b.get(k)!r}")
if slurm and (slurm[0].get("slurm_job_id"), slurm[0].get("slurm_nodelist")) != (job, "tessera-n[1-2]"):
    problems.append(f"first record lacks the job: {slurm[0]}")
if any("slurm_job_id" in r for r in slurm[1:] + local):
    problems.append("slurm_job_id outside the Slurm run's first record")
print("\n".join(problems) if problems else f"{steps} steps of loss, val_loss, grad_norm, lr identical")
sys.exit(1 if problems else 0)
PY
[[ $? -eq 0 ]] && pass "metrics.jsonl equals mpirun's and names the job" || fail "metrics.jsonl"
finish
