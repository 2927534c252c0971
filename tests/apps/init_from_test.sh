#!/usr/bin/env bash
# train.init_from: weights trained on 1 rank, exported to llm.c's .bin and imported back (a
# weights-only file), fine-tune on a 1x2 grid: the log names the file, the run starts at step 0
# (warmup lr, metrics from step 1) and its first loss is far below a fresh model's (~ln V); with
# checkpoint.resume=auto a requeued job resumes its own checkpoint instead. A missing file, an
# llm.c file, a model of another shape, and init_from beside checkpoint.resume=latest fail with
# the file or both keys named and a non-zero exit.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")
train="$TESSERA_BIN/tessera-train"
mpi2() { timeout 60 mpirun --oversubscribe --bind-to none -n 2 "$@"; }
# The loss, lr or step of record N (1-based) of a metrics.jsonl.
field() {
  /usr/bin/python3 -c "import json, sys; print(json.loads(open(sys.argv[1]).readlines()[int(sys.argv[2]) - 1])[sys.argv[3]])" "$@"
}

# ---- the weights to import: 150 steps on 1 rank, then HDF5 -> llm.c -> HDF5 ----
"$train" configs/tiny.yaml $sets --set train.steps=150 --set train.val_every=0 \
  --set optim.warmup_steps=10 > "$WORK/base.log" 2>&1 \
  && pass "base run: 150 steps on 1 rank" || { fail "base run"; tail -5 "$WORK/base.log"; }
fresh=$(field "$WORK/run/metrics.jsonl" 1 loss)
fresh_lr=$(field "$WORK/run/metrics.jsonl" 1 lr)
"$TESSERA_BIN/tessera-ckpt" convert "$WORK/run/model.h5" "$WORK/gpt.bin" > /dev/null 2>&1 \
  && "$TESSERA_BIN/tessera-ckpt" convert "$WORK/gpt.bin" "$WORK/imported.h5" > /dev/null 2>&1 \
  && pass "model.h5 -> llm.c gpt.bin -> imported.h5" || fail "tessera-ckpt convert"

# ---- fine-tuning on tp = 2 ----
ft_sets="$sets --set parallel.tp=2 --set train.val_every=0 --set optim.warmup_steps=10 \
  --set train.log_every=1 --set train.out_dir=$WORK/ft --set train.init_from=$WORK/imported.h5"
mpi2 "$train" configs/tiny.yaml $ft_sets --set train.steps=5 > "$WORK/ft.log" 2>&1
rc=$?
[[ $rc -eq 0 ]] && pass "fine-tuning on 1x2: exit 0" || { fail "fine-tuning: exit $rc"; tail -5 "$WORK/ft.log"; }
grep -q "^initialised weights from $WORK/imported.h5\$" "$WORK/ft.log" \
  && pass "log: $(grep '^initialised' "$WORK/ft.log")" || fail "no 'initialised weights from' line"
grep -q "^resumed from" "$WORK/ft.log" && fail "fine-tuning says it resumed" || true
first=$(field "$WORK/ft/metrics.jsonl" 1 loss 2>&1)
# A fresh tiny model starts near ln(512) = 6.24; the imported one where the base run ended.
awk -v f="$first" -v z="$fresh" 'BEGIN { exit !(f + 0 > 0 && f + 1.0 < z + 0) }' \
  && pass "first fine-tuning loss $first, fresh model's $fresh" \
  || fail "first fine-tuning loss '$first' is not far below a fresh model's $fresh"
[[ $(field "$WORK/ft/metrics.jsonl" 1 step) == 1 && $(field "$WORK/ft/metrics.jsonl" 1 lr) == "$fresh_lr" \
   && $(wc -l < "$WORK/ft/metrics.jsonl") -eq 5 ]] \
  && pass "starts at step 0: record 1 is step 1 with the warmup lr $fresh_lr, 5 records" \
  || fail "fine-tuning did not start at step 0: $(head -1 "$WORK/ft/metrics.jsonl")"

# ---- a requeued fine-tuning job: checkpoint.resume=auto resumes its own checkpoint ----
auto_sets="$ft_sets --set checkpoint.dir=$WORK/ck --set checkpoint.resume=auto"
mpi2 "$train" configs/tiny.yaml $auto_sets --set train.steps=4 > "$WORK/auto1.log" 2>&1 \
  && grep -q "^initialised weights from" "$WORK/auto1.log" \
  && pass "resume=auto, no checkpoint yet: starts from init_from" \
  || { fail "resume=auto first start"; tail -5 "$WORK/auto1.log"; }
mpi2 "$train" configs/tiny.yaml $auto_sets --set train.steps=6 > "$WORK/auto2.log" 2>&1 \
  && grep -q "^resumed from .* at step 4" "$WORK/auto2.log" \
  && ! grep -q "^initialised weights" "$WORK/auto2.log" \
  && pass "resume=auto with a checkpoint: $(grep '^resumed' "$WORK/auto2.log"), init_from unused" \
  || { fail "resume=auto requeue"; tail -5 "$WORK/auto2.log"; }

# ---- bad input ----
expect_error "missing init_from file" \
  "train.init_from: checkpoint '$WORK/nope.h5': not found" \
  "$train" configs/tiny.yaml $sets --set train.init_from="$WORK/nope.h5"
out=$(mpi2 "$train" configs/tiny.yaml $sets --set parallel.tp=2 \
  --set train.init_from="$WORK/nope.h5" 2>&1)
rc=$?
# Both ranks find it missing: rank 0 says so once for both.
n=$(grep -c "^\[all 2 ranks\] tessera-train: train.init_from: checkpoint '$WORK/nope.h5': not found" <<< "$out")
[[ $rc -ne 0 && $rc -ne 124 && $n -eq 1 && $(grep -c 'tessera-train:' <<< "$out") -eq 1 ]] \
  && pass "missing init_from file on 1x2: exit $rc, said once for both ranks" \
  || fail "missing init_from file on 1x2: exit $rc, want one [all 2 ranks] line: $out"
expect_error "llm.c file as init_from" "'$WORK/gpt.bin' is an llm.c model file; convert it first" \
  "$train" configs/tiny.yaml $sets --set train.init_from="$WORK/gpt.bin"
expect_error "init_from of another shape" \
  "imported.h5'.*model.n_embd 64 in the checkpoint, 32 in this model" \
  "$train" configs/tiny.yaml $sets --set model.n_embd=32 --set train.init_from="$WORK/imported.h5"
expect_error "init_from with checkpoint.resume=latest" \
  "key 'train.init_from' = .* cannot be combined with checkpoint.resume = \"latest\"" \
  "$train" configs/tiny.yaml $sets --set checkpoint.dir="$WORK/ck" \
  --set checkpoint.resume=latest --set train.init_from="$WORK/imported.h5"
finish
