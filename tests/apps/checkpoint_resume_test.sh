#!/usr/bin/env bash
# Checkpoints from tessera-train: SIGUSR1 (what Slurm sends before a time limit) makes it write
# a checkpoint and exit 0; --resume continues to the end with the losses of an uninterrupted run
# (same single-rank grid: loss, grad_norm and lr in metrics.jsonl equal at full precision; with
# 1000 warmup steps every step here is in the warmup, whose schedule does not depend on
# train.steps);
# `latest` names the newest checkpoint, which h5dump can read.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")
ck="$WORK/ckpt"
# same_steps REF GOT SKIP FIRST LAST: GOT's lines after the first SKIP (what a resumed run
# appended) are steps FIRST..LAST, and their loss, grad_norm and lr equal REF's exactly.
same_steps() {
  /usr/bin/python3 - "$@" <<'PY'
import json, sys
def steps(path, skip=0):
    return {r["step"]: r for r in map(json.loads, open(path).readlines()[skip:])}
ref, got = steps(sys.argv[1]), steps(sys.argv[2], int(sys.argv[3]))
want = list(range(int(sys.argv[4]), int(sys.argv[5]) + 1))
bad = [f"step {s} {k}: {got.get(s, {}).get(k)!r} vs {ref.get(s, {}).get(k)!r}"
       for s in want for k in ("loss", "grad_norm", "lr")
       if s not in got or s not in ref or got[s].get(k) != ref[s][k]]
if sorted(got) != want: bad.append(f"resume wrote steps {sorted(got)}, expected {want}")
print("; ".join(bad))
sys.exit(1 if bad else 0)
PY
}

"$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set train.steps=100000 --set train.log_every=1 \
  --set optim.warmup_steps=1000 --set checkpoint.dir="$ck" --set checkpoint.every=0 \
  > "$WORK/run1.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  grep -q '^step ' "$WORK/run1.log" && break
  sleep 0.1
done
kill -USR1 $pid
wait $pid
rc=$?
[[ $rc -eq 0 ]] && pass "SIGUSR1: exit 0" || { fail "SIGUSR1: exit $rc"; tail -5 "$WORK/run1.log"; }
grep -q 'stopping after step .* on a signal (checkpoint written)' "$WORK/run1.log" \
  && pass "SIGUSR1: $(grep 'stopping after' "$WORK/run1.log")" || fail "no stop line"
latest=$(cat "$ck/latest" 2>/dev/null)
[[ -n "$latest" && -f "$ck/$latest" || -f "$latest" ]] && pass "latest names $latest" \
  || fail "latest missing or dangling: '$latest'"
stopped=$(sed -n 's/^stopping after step \([0-9]*\).*/\1/p' "$WORK/run1.log")

h5dump -H "$(ls "$ck"/step_*.h5 | tail -1)" > "$WORK/h5dump.txt" 2>&1 \
  && grep -q 'DATASET "wte"' "$WORK/h5dump.txt" && pass "h5dump -H reads the checkpoint" \
  || { fail "h5dump -H failed"; head -5 "$WORK/h5dump.txt"; }

h5py_out=$(/usr/bin/python3 - "$(ls "$ck"/step_*.h5 | tail -1)" <<'PY' 2>&1
import sys
import h5py
with h5py.File(sys.argv[1], "r") as f:
    wte = f["model/wte"]
    m = f["optim/m/wte"]
    assert wte.shape == m.shape and wte.dtype == "float32", (wte.shape, m.shape, wte.dtype)
    assert f.attrs["step"] > 0 and "checksum" in wte.attrs
    print(f"step {int(f.attrs['step'])}, wte {wte.shape}, {len(f['model'])} model datasets")
PY
) && pass "h5py reads the checkpoint: $h5py_out" || fail "h5py cannot read the checkpoint: $h5py_out"

total=$((stopped + 5))
kept=$(cat "$WORK/run/metrics.jsonl" 2>/dev/null | wc -l)
"$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set train.steps=$total --set train.log_every=1 \
  --set optim.warmup_steps=1000 --set checkpoint.dir="$ck" --resume > "$WORK/run2.log" 2>&1 \
  || { fail "resume run failed"; tail -5 "$WORK/run2.log"; }
grep -q "resumed from .* at step $stopped" "$WORK/run2.log" && pass "resumed at step $stopped" \
  || fail "no resume line for step $stopped"
grep -Eq "^step +$total/$total" "$WORK/run2.log" && pass "ran on to step $total" || fail "did not reach $total"
first=$(grep -Em1 '^step ' "$WORK/run2.log" | awk '{print $2}')
[[ "$first" == "$((stopped + 1))/$total" ]] && pass "first step after resume is $first" \
  || fail "first step after resume is $first, expected $((stopped + 1))/$total"
# The same run without the interruption: the resumed steps' losses are bit for bit its losses.
"$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set train.steps=$total --set train.log_every=1 \
  --set optim.warmup_steps=1000 --set train.out_dir="$WORK/ref" > "$WORK/ref.log" 2>&1 \
  || { fail "uninterrupted run failed"; tail -5 "$WORK/ref.log"; }
diff=$(same_steps "$WORK/ref/metrics.jsonl" "$WORK/run/metrics.jsonl" "$kept" \
  $((stopped + 1)) $total) \
  && pass "resumed steps $((stopped + 1))-$total equal the uninterrupted run bit for bit" \
  || fail "resumed steps differ from the uninterrupted run: $diff"

# Generation reads the final checkpoint like the weights file, on one rank or with tp = 2.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
final="$ck/$(cat "$ck/latest")"
gen() { "$@" --prompt "ROMEO:" --max-tokens 20 --ignore-eot --greedy 2>&1; }
a=$(gen "$TESSERA_BIN/tessera-generate" "$WORK/run/model.h5")
b=$(gen "$TESSERA_BIN/tessera-generate" "$final")
c=$(gen mpirun --oversubscribe --bind-to none -n 2 "$TESSERA_BIN/tessera-generate" "$final" --tp 2)
[[ "$a" == "$b" && "$b" == "$c" && "$a" == ROMEO:* ]] \
  && pass "generation from the checkpoint (1 rank and tp 2) = from model.h5 (final weights)" \
  || fail "generation differs: [$a] [$b] [$c]"

# checkpoint.resume=auto (for requeued jobs): a fresh directory starts at step 1; once a checkpoint
# exists the same command continues from it, with the losses of an uninterrupted 5-step run.
auto=("$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set train.log_every=1
  --set train.val_every=0 --set checkpoint.dir="$WORK/auto" --set checkpoint.resume=auto)
"${auto[@]}" --set train.steps=3 > "$WORK/auto1.log" 2>&1 \
  && grep -q "resume auto: no checkpoint in .* yet; starting at step 0" "$WORK/auto1.log" \
  && grep -Eq '^step +1/3 ' "$WORK/auto1.log" \
  && pass "resume=auto with no checkpoint starts fresh" || { fail "resume=auto, fresh"; tail -3 "$WORK/auto1.log"; }
kept=$(cat "$WORK/run/metrics.jsonl" 2>/dev/null | wc -l)
"${auto[@]}" --set train.steps=5 > "$WORK/auto2.log" 2>&1 \
  && grep -q "resumed from .*step_00000003.h5 at step 3" "$WORK/auto2.log" \
  && grep -Eq '^step +4/5 ' "$WORK/auto2.log" \
  && pass "resume=auto continues from latest (step 3)" || { fail "resume=auto, existing"; tail -3 "$WORK/auto2.log"; }
"${auto[@]}" --set train.steps=5 --set checkpoint.dir="$WORK/auto-ref" \
  --set train.out_dir="$WORK/auto-ref" > "$WORK/auto-ref.log" 2>&1 \
  || { fail "resume=auto, uninterrupted run"; tail -3 "$WORK/auto-ref.log"; }
diff=$(same_steps "$WORK/auto-ref/metrics.jsonl" "$WORK/run/metrics.jsonl" "$kept" 4 5) \
  && pass "resume=auto: steps 4-5 equal the uninterrupted run bit for bit" \
  || fail "resume=auto: resumed steps differ from the uninterrupted run: $diff"
finish
