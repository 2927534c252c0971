#!/usr/bin/env bash
# Nothing lost: a 2-rank run (1x2 grid) saving at steps 3 and 6 is SIGKILLed at each point of its
# second checkpoint (TESSERA_CKPT_KILL: mid-write, before and after the rename, between writing
# and renaming `latest`, before pruning), on the rank that is doing the work there. Every time the
# job dies within 60 s (wall time measured), `latest` names a complete checkpoint that verifies,
# and resuming from it finishes the run with the uninterrupted run's losses, bit for bit: the loss,
# grad_norm and lr of steps 4-6 in metrics.jsonl (full precision) equal the uninterrupted run's.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")
ck="$WORK/ckpt"
train() {
  timeout 120 mpirun --oversubscribe --bind-to none -n 2 "$TESSERA_BIN/tessera-train" \
    configs/tiny.yaml $sets --set parallel.tp=2 --set train.steps=6 --set train.val_every=0 \
    --set train.log_every=1 --set checkpoint.dir="$ck" --set checkpoint.every=3 --set checkpoint.keep=1 "$@"
}
losses() { grep -E '^step +[0-9]+/6 ' "$1" | awk '{print $2, $5}'; }
# same_steps REF GOT SKIP: the records of steps 4-6 among GOT's lines after the first SKIP (what a
# resume appended) equal REF's exactly; prints the differences otherwise.
same_steps() {
  /usr/bin/python3 - "$@" <<'PY'
import json, sys
def steps(path, skip=0):
    return {r["step"]: r for r in map(json.loads, open(path).readlines()[skip:])}
ref, got = steps(sys.argv[1]), steps(sys.argv[2], int(sys.argv[3]))
bad = [f"step {s} {k}: {got.get(s, {}).get(k)!r} vs {ref[s][k]!r}"
       for s in (4, 5, 6) for k in ("loss", "grad_norm", "lr")
       if s not in got or got[s].get(k) != ref[s][k]]
if sorted(got) != [4, 5, 6]: bad.append(f"resume wrote steps {sorted(got)}, expected [4, 5, 6]")
print("; ".join(bad))
sys.exit(1 if bad else 0)
PY
}

train > "$WORK/ref.log" 2>&1 || { fail "uninterrupted run"; tail -5 "$WORK/ref.log"; }
ref_losses=$(losses "$WORK/ref.log")
cp "$WORK/run/metrics.jsonl" "$WORK/ref.jsonl"
[[ $(echo "$ref_losses" | wc -l) -eq 6 ]] && pass "uninterrupted run: 6 steps" \
  || fail "uninterrupted run printed: $ref_losses"

# point:rank. The small model has 28 tensors, so 84 datasets with the optimizer moments.
for spec in dataset-0:1 dataset-50:1 dataset-83:0 before-rename:1 after-rename:0 latest-tmp:0 \
  before-prune:0; do
  point=${spec%:*}
  rank=${spec#*:}
  rm -rf "$ck" "$WORK/run"
  start=$(date +%s.%N)
  TESSERA_CKPT_KILL="$point:2:$rank" train > "$WORK/kill.log" 2>&1
  rc=$?
  took=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if [[ $rc -eq 0 || $rc -eq 124 ]]; then
    fail "$point: run exit $rc (expected killed)"; tail -3 "$WORK/kill.log"; continue
  fi
  awk -v t="$took" 'BEGIN { exit !(t <= 60) }' \
    || { fail "$point: the job took ${took}s to die, more than 60 s"; continue; }
  grep -q "injected SIGKILL at $point" "$WORK/kill.log" \
    || { fail "$point: the kill did not happen"; tail -3 "$WORK/kill.log"; continue; }
  # Before `latest` moves it must still name step 3; after, step 6.
  want=step_00000003.h5
  [[ $point == before-prune ]] && want=step_00000006.h5
  latest=$(cat "$ck/latest" 2>/dev/null)
  if [[ "$latest" != "$want" ]]; then
    fail "$point: latest names '$latest', expected $want"; continue
  fi
  if ! out=$("$TESSERA_BIN/tessera-ckpt" verify "$ck/$latest" 2>&1); then
    fail "$point: latest does not verify: $out"; continue
  fi
  what="$point (rank $rank, died after ${took}s, exit $rc): latest -> $latest verifies"
  if [[ $point == before-prune ]]; then
    # The final checkpoint is complete: resuming has nothing left to do, and says so.
    train --resume > "$WORK/resume.log" 2>&1
    [[ $? -ne 0 ]] && grep -q "at step 6.*nothing to do" "$WORK/resume.log" \
      && pass "$what; resume reports the run complete" \
      || { fail "$point: resume of a complete run"; tail -3 "$WORK/resume.log"; }
    continue
  fi
  kept=$(cat "$WORK/run/metrics.jsonl" 2>/dev/null | wc -l)
  train --resume > "$WORK/resume.log" 2>&1 || { fail "$point: resume"; tail -3 "$WORK/resume.log"; continue; }
  # The resumed run's steps must equal the uninterrupted run's same steps, bit for bit.
  if diff=$(same_steps "$WORK/ref.jsonl" "$WORK/run/metrics.jsonl" "$kept"); then
    pass "$what; resumed steps 4-6 equal the uninterrupted run bit for bit (loss, grad_norm, lr)"
  else
    fail "$point: resumed steps differ from the uninterrupted run: $diff"
  fi
done
finish
