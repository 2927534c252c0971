#!/usr/bin/env bash
# train.dtype=bf16 on the CPU backend (activations kept in bf16, GEMM operands rounded to bf16,
# products summed in fp32, fp32 master weights and AdamW moments): the tiny model's shape (4
# layers, 128 wide, 4 heads), 200 steps on Tiny Shakespeare, tracks the fp32 run of the same seed within 1%: the validation
# loss at steps 100 and 200 and the mean training loss of the last 20 steps. The losses also
# differ from fp32's (so bf16 was on), and the run says its precision.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
export OMP_NUM_THREADS=2
make_small_data "$WORK/data"
d=$WORK/data
sets="--set model.vocab_size=512 --set model.max_seq_len=64 --set train.seq_len=64
  --set train.steps=200 --set train.val_every=100 --set train.val_batches=8 --set train.log_every=50
  --set data.train=$d/train.bin --set data.val=$d/val.bin --set data.tokenizer=$d/tokenizer"
for dtype in fp32 bf16; do
  # shellcheck disable=SC2086
  if "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set train.dtype=$dtype \
      --set train.out_dir="$WORK/$dtype" > "$WORK/$dtype.log" 2>&1; then
    pass "train.dtype=$dtype: 200 steps"
  else
    fail "train.dtype=$dtype: exit $?"
    sed 's/^/    /' "$WORK/$dtype.log" | tail -20
  fi
done
grep -q "precision: bf16 activations" "$WORK/bf16.log" \
  && pass "the bf16 run says its precision: $(grep -m1 "precision: bf16" "$WORK/bf16.log")" \
  || fail "the bf16 run's log never says 'precision: bf16 activations ...'"
if report=$(python3 - "$WORK/fp32/metrics.jsonl" "$WORK/bf16/metrics.jsonl" 2>&1 <<'PY'
import json, sys
runs = [[json.loads(l) for l in open(p)] for p in sys.argv[1:]]
def summary(recs):
    val = {r["step"]: r["val_loss"] for r in recs if "val_loss" in r}
    train = [r["loss"] for r in recs if "loss" in r][-20:]
    return val, sum(train) / len(train)
(v32, t32), (v16, t16) = summary(runs[0]), summary(runs[1])
bad = 0
for step in sorted(v32):
    rel = abs(v16[step] - v32[step]) / v32[step]
    print(f"val loss at step {step}: fp32 {v32[step]:.5f}, bf16 {v16[step]:.5f} ({100 * rel:.3f}%)")
    bad += rel >= 0.01
rel = abs(t16 - t32) / t32
print(f"mean train loss, last 20 steps: fp32 {t32:.5f}, bf16 {t16:.5f} ({100 * rel:.3f}%)")
bad += rel >= 0.01
if len(v32) < 2: print("fewer than 2 validations"); bad += 1
if v16 == v32: print("bf16 gave fp32's validation losses exactly: was it on?"); bad += 1
sys.exit(1 if bad else 0)
PY
); then
  pass "bf16 within 1% of fp32:"; sed 's/^/    /' <<< "$report"
else
  fail "bf16 against fp32:"; sed 's/^/    /' <<< "$report"
fi
finish
