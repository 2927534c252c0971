#!/usr/bin/env bash
# A train.sbatch job with a bad config ends FAILED, with tessera-train's config error in its
# %x-%j.out file and a FAILED line in the cluster's job-completion log.
source "$(dirname "$0")/lib.sh"
require_cluster
printf 'model:\n  n_layer: four\n' > "$WORK/bad.yaml"

id=$(submit --nodes=1 --ntasks-per-node=2 "$SLURM_SCRIPTS/train.sbatch" "$WORK/bad.yaml") ||
  { fail "sbatch train.sbatch: $id"; finish; exit 1; }
read -r state code < <(wait_job "$id" 120)
out=$(job_output tessera-train "$id")
[[ $state == FAILED && $code != 0:0 ]] && pass "job $id FAILED (exit $code)" ||
  fail "job $id ended $state (exit $code), expected FAILED"
grep -Eq "bad\.yaml.*model\.n_layer|model\.n_layer.*bad\.yaml" "$out" &&
  pass "output names the file and the key: $(grep -m1 'n_layer' "$out")" ||
  { fail "no config error naming bad.yaml and model.n_layer in $out:"; sed 's/^/    /' "$out"; }
comp=${TESSERA_SLURM_DIR:-/var/tmp/tessera-slurm}/jobcomp.log
grep -q "JobId=$id .*JobState=FAILED" "$comp" && pass "jobcomp log: FAILED" ||
  fail "no FAILED line for job $id in $comp"
finish
