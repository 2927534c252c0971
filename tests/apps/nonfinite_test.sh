#!/usr/bin/env bash
# A diverging run stops, never publishes NaN: with optim.lr=1e10 the loss turns non-finite within
# a few steps; tessera-train (1 rank, and dp 2) then exits non-zero on every rank within seconds
# naming the step, the value and the fix, before applying that update or checkpointing it:
# `latest` still names the last finite checkpoint (it verifies), metrics.jsonl has no null loss
# and no final weights are written; an update that overflows the weights (finite loss and norm)
# is caught before the checkpoint. train.skip_nonfinite=N skips up to N such steps (no update:
# the weights stay those of the step before, on every rank even when one rank alone saw the NaN)
# and fails on the next one, naming the count. tessera-ckpt verify rejects a checkpoint whose
# checksums match but which holds a NaN or an inf, naming the dataset.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")
mpirun=(mpirun --oversubscribe --bind-to none)
train=("$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set train.steps=10
  --set train.log_every=1)
diverge=(--set optim.lr=1e10 --set checkpoint.every=1)

# check_stopped NAME CKPT_DIR RUN_DIR: the run that just wrote $WORK/err stopped at step N with a
# message naming N, the value and the fix; latest names step N-1, which verifies (all finite);
# nothing of step N was written; metrics.jsonl has N-1 records and no null.
check_stopped() {
  local name=$1 ck=$2 run=$3
  local n
  n=$(sed -En 's/.*tessera-train: step ([0-9]+)\/10: loss (nan|inf|-inf), grad norm .*/\1/p' \
    "$WORK/err" | head -1)
  if [[ -z "$n" ]]; then
    fail "$name: no 'step N/10: loss nan' error:"; sed 's/^/    /' "$WORK/err" | head -5
    return
  fi
  local line
  line=$(grep -m1 'tessera-train: step' "$WORK/err")
  [[ "$line" == *"training stopped before applying this update"* &&
    "$line" == *"lower optim.lr (now 1e+10) or check the training data"* &&
    "$line" == *"last good checkpoint (finite weights) is $ck/step_$(printf %08d $((n - 1))).h5"* &&
    "$line" == *"--set checkpoint.resume=$ck/step_"* ]] \
    && pass "$name: the error names step $n, the value, the fix and the last good checkpoint" \
    || fail "$name: message lacks step, fix or checkpoint: $line"
  local others
  others=$(grep 'tessera-train:' "$WORK/err" | grep -vc "step $n/10: loss")
  [[ $others -eq 0 ]] && pass "$name: every rank's message is the same error" \
    || fail "$name: $others rank message(s) differ"
  local latest
  latest=$(cat "$ck/latest" 2>/dev/null)
  [[ "$latest" == "step_$(printf %08d $((n - 1))).h5" ]] \
    && pass "$name: latest still names the step before ($latest)" \
    || fail "$name: latest is '$latest', expected step $((n - 1))"
  [[ ! -e "$ck/step_$(printf %08d "$n").h5" && ! -e "$ck/step_$(printf %08d "$n").h5.tmp" ]] \
    && pass "$name: no checkpoint of step $n" || fail "$name: a checkpoint of step $n exists"
  local out rc
  out=$("$TESSERA_BIN/tessera-ckpt" verify "$ck/$latest" 2>&1)
  rc=$?
  [[ $rc -eq 0 && "$out" == *": sound ("* ]] && pass "$name: latest verifies (finite): $out" \
    || fail "$name: latest does not verify: exit $rc: $out"
  local records
  records=$(wc -l < "$run/metrics.jsonl")
  [[ $records -eq $((n - 1)) ]] && ! grep -q null "$run/metrics.jsonl" \
    && pass "$name: metrics.jsonl has the $records finite steps, no null" \
    || { fail "$name: metrics.jsonl has $records records (expected $((n - 1))) or a null:";
      sed 's/^/    /' "$run/metrics.jsonl"; }
  [[ ! -e "$run/model.h5" ]] && pass "$name: no final weights written" \
    || fail "$name: $run/model.h5 was written"
}

# (a) Diverging, one rank: one stderr line, the error.
expect_error "lr=1e10, 1 rank" "^\[rank 0 \(dp 0, tp 0\)\] tessera-train: step [0-9]+/10: loss nan" \
  "${train[@]}" "${diverge[@]}" --set checkpoint.dir="$WORK/ck1" --set train.out_dir="$WORK/run1"
check_stopped "lr=1e10, 1 rank" "$WORK/ck1" "$WORK/run1"

# (a) Diverging, dp 2: every rank ends, non-zero, within seconds.
start=$(date +%s.%N)
timeout 60 "${mpirun[@]}" -n 2 "${train[@]}" "${diverge[@]}" --set checkpoint.dir="$WORK/ck2" \
  --set train.out_dir="$WORK/run2" > "$WORK/out" 2> "$WORK/err"
rc=$?
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
if [[ $rc -ne 0 && $rc -ne 124 ]] && awk -v e="$elapsed" 'BEGIN { exit !(e < 30) }'; then
  pass "lr=1e10, dp 2: exit $rc after ${elapsed}s"
else
  fail "lr=1e10, dp 2: exit $rc after ${elapsed}s"
fi
check_stopped "lr=1e10, dp 2" "$WORK/ck2" "$WORK/run2"

# (a) An update that overflows with a finite loss and norm (optim.lr=1e41 is inf as a float):
# the weights are checked before any checkpoint or weights file is written.
pattern="tessera-train: after step 1 dataset /model/[a-z0-9._]+ holds non-finite values \(an update"
pattern+=" overflowed\): training stopped without writing a checkpoint or weights file of this step;"
pattern+=" lower optim.lr \(now 1e\+41\)"
expect_error "lr=1e41: non-finite weights after a finite step" "$pattern" \
  "${train[@]}" --set optim.lr=1e41 --set optim.warmup_steps=0 --set checkpoint.dir="$WORK/ck5" \
  --set checkpoint.every=1 --set train.out_dir="$WORK/run5"
[[ ! -e "$WORK/ck5/latest" && -z "$(ls "$WORK/ck5")" && ! -e "$WORK/run5/model.h5" ]] \
  && pass "lr=1e41: nothing published" \
  || fail "lr=1e41: files written: $(ls "$WORK/ck5" "$WORK/run5")"

# (b) skip_nonfinite=2 with lr=1e10: two steps skipped with a warning each, the third fails.
timeout 60 "${train[@]}" --set optim.lr=1e10 --set train.skip_nonfinite=2 \
  --set train.out_dir="$WORK/run3" > "$WORK/out" 2> "$WORK/err"
rc=$?
warn='^warning: step [0-9]+/10: loss nan, .*; step skipped, no update applied '
warn+='\([12] of train.skip_nonfinite=2\)$'
warnings=$(grep -Ec "$warn" "$WORK/err")
third='tessera-train: step [0-9]+/10: loss nan, .*the 3rd non-finite step, '
third+='more than train.skip_nonfinite=2 allows: training stopped'
[[ $rc -ne 0 && $rc -ne 124 && $warnings -eq 2 ]] && grep -Eq "$third" "$WORK/err" \
  && pass "skip_nonfinite=2: 2 steps skipped, the 3rd fails (exit $rc): $(tail -1 "$WORK/err")" \
  || { fail "skip_nonfinite=2: exit $rc, $warnings warnings:"; sed 's/^/    /' "$WORK/err"; }
! grep -q null "$WORK/run3/metrics.jsonl" && pass "skip_nonfinite=2: no null in metrics.jsonl" \
  || fail "skip_nonfinite=2: null in metrics.jsonl"

# (b) Recovery, dp 2: rank 1 alone sees a NaN grad norm at steps 3 and 4
# (TESSERA_INJECT_FAULT=nonfinite@1). Both ranks skip both steps (rank 0, which writes the
# metrics and the checkpoints, saw nothing itself), then train on and finish normally.
ck="$WORK/ck4"
TESSERA_INJECT_FAULT=nonfinite@1 timeout 60 "${mpirun[@]}" -n 2 -x TESSERA_INJECT_FAULT \
  "${train[@]}" --set train.skip_nonfinite=3 --set checkpoint.dir="$ck" --set checkpoint.every=1 \
  --set checkpoint.keep=20 --set train.out_dir="$WORK/run4" > "$WORK/out" 2> "$WORK/err"
rc=$?
[[ $rc -eq 0 ]] && grep -q '^final: val loss' "$WORK/out" \
  && pass "skip_nonfinite=3, NaN on rank 1 at steps 3-4: finished with the final line" \
  || { fail "skip_nonfinite=3 recovery: exit $rc"; tail -5 "$WORK/err" "$WORK/out"; }
warn='^warning: step 3/10: loss [0-9.]*, grad norm nan (every gradient is finite); '
warn+='step skipped, no update applied (1 of train.skip_nonfinite=3)$'
[[ $(grep -c 'step skipped, no update applied' "$WORK/err") -eq 2 ]] && grep -q "$warn" "$WORK/err" \
  && grep -q '^warning: step 4/10: .*(2 of train.skip_nonfinite=3)$' "$WORK/err" \
  && pass "rank 0 warns for steps 3 and 4: $(head -1 "$WORK/err")" \
  || { fail "skip warnings:"; sed 's/^/    /' "$WORK/err"; }
steps=$(/usr/bin/python3 -c '
import json, sys
print(" ".join(str(json.loads(l)["step"]) for l in open(sys.argv[1])))' "$WORK/run4/metrics.jsonl")
[[ "$steps" == "1 2 5 6 7 8 9 10" ]] && ! grep -q null "$WORK/run4/metrics.jsonl" \
  && pass "metrics.jsonl records steps $steps (the skipped ones left out), no null" \
  || fail "metrics.jsonl steps: $steps"
same=$(/usr/bin/python3 - "$ck" <<'PY' 2>&1
import sys
import h5py
import numpy as np
d = sys.argv[1]
files = [h5py.File(f"{d}/step_{s:08d}.h5", "r") for s in (2, 3, 4, 5)]
names = []
files[0].visit(lambda n: names.append(n) if isinstance(files[0][n], h5py.Dataset) else None)
for f in files[1:3]:  # steps 3 and 4: no update, so exactly step 2's weights and moments
    for n in names:
        assert np.array_equal(f[n][...], files[0][n][...]), (f.filename, n)
assert not np.array_equal(files[3]["model/wte"][...], files[0]["model/wte"][...]), "step 5 updated"
print(f"{len(names)} datasets of steps 3 and 4 equal step 2's; step 5 differs")
PY
)
[[ $? -eq 0 ]] && pass "skipped steps applied no update: $same" || fail "skipped steps: $same"

# A negative skip count is a config error.
expect_error "train.skip_nonfinite=-1" "key 'train.skip_nonfinite' = -1 must be >= 0" \
  "${train[@]}" --set train.skip_nonfinite=-1

# (c) verify: a good checkpoint with one NaN written into /model/ln_f.bias. With its checksum
# left alone verify reports the mismatch; with the checksum recomputed for the new bits
# (docs/CHECKPOINT-FORMAT.md), the file passes every other check, and the finite check names it.
good="$ck/step_00000010.h5"
poison() {  # poison IN OUT DATASET VALUE FIX_CHECKSUM(0|1)
  cp "$1" "$2"
  /usr/bin/python3 - "$2" "$3" "$4" "$5" <<'PY'
import sys
import h5py
import numpy as np
M = (1 << 64) - 1
def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)
def term(index, bits):
    return mix64(mix64(index) ^ bits)
path, name, value, fix = sys.argv[1], sys.argv[2], np.float32(sys.argv[3]), sys.argv[4] == "1"
with h5py.File(path, "r+") as f:
    d = f[name]
    x = d[...]
    flat = x.reshape(-1)
    bits = flat.view(np.uint32)
    stored = int(d.attrs["checksum"])
    assert sum(term(i, int(b)) for i, b in enumerate(bits)) & M == stored, "checksum algorithm"
    old = int(bits[3])
    flat[3] = value
    d[...] = x
    if fix:
        d.attrs.modify("checksum", np.uint64((stored - term(3, old) + term(3, int(bits[3]))) & M))
PY
}
poison "$good" "$WORK/nan-badsum.h5" model/ln_f.bias nan 0 || fail "poisoning (checksum kept)"
expect_error "verify: a NaN, checksum not updated" "checksum mismatch" \
  "$TESSERA_BIN/tessera-ckpt" verify "$WORK/nan-badsum.h5"
poison "$good" "$WORK/nan.h5" model/ln_f.bias nan 1 || fail "poisoning /model/ln_f.bias"
expect_error "verify: a NaN in a weight, checksums valid" "nan.h5': dataset /model/ln_f.bias \
holds 1 non-finite value\(s\) of 64 \(first: nan at flat index 3\): the checksums match" \
  "$TESSERA_BIN/tessera-ckpt" verify "$WORK/nan.h5"
poison "$good" "$WORK/inf.h5" optim/v/wte inf 1 || fail "poisoning /optim/v/wte"
expect_error "verify: an inf in an AdamW moment, checksums valid" "inf.h5': dataset /optim/v/wte \
holds 1 non-finite value\(s\) of 32768 \(first: inf at flat index 3\)" \
  "$TESSERA_BIN/tessera-ckpt" verify "$WORK/inf.h5"
out=$(timeout 60 "${mpirun[@]}" -n 2 "$TESSERA_BIN/tessera-ckpt" verify "$WORK/nan.h5" 2>&1)
rc=$?
[[ $rc -ne 0 && $rc -ne 124 && "$out" == *"/model/ln_f.bias holds 1 non-finite"* ]] \
  && pass "verify on 2 ranks rejects it too (exit $rc)" || fail "verify on 2 ranks: exit $rc: $out"
finish
