#!/usr/bin/env bash
# train.device=cuda in tessera-train on a 1x2 grid: never a silent CPU run. Without a usable GPU
# (or in a build without the CUDA backend) every rank returns make_backend's error naming the fix
# (train.device=cpu), exits non-zero without hanging and writes no weights. With a GPU the run
# trains and writes its weights.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")

out=$(timeout 60 mpirun --oversubscribe --bind-to none -n 2 "$TESSERA_BIN/tessera-train" \
  configs/tiny.yaml $sets --set parallel.tp=2 --set train.steps=2 --set train.device=cuda 2>&1)
rc=$?
if command -v nvidia-smi > /dev/null && nvidia-smi > /dev/null 2>&1; then
  [[ $rc -eq 0 && -s "$WORK/run/model.h5" ]] && pass "train.device=cuda on 1x2 with a GPU: trained" \
    || { fail "train.device=cuda on 1x2 with a GPU: exit $rc"; sed 's/^/    /' <<< "$out"; }
  finish
  exit
fi
want="train.device.{1,2}cuda.*(no usable CUDA device|has no CUDA backend).*use train.device=cpu"
# Both ranks fail alike before any collective: rank 0 says it once for both.
n=$(grep -Ec "^\[all 2 ranks\] tessera-train: $want" <<< "$out")
[[ $rc -ne 0 && $rc -ne 124 ]] && pass "train.device=cuda on 1x2: exit $rc" \
  || fail "train.device=cuda on 1x2: exit $rc"
[[ $n -eq 1 && $(grep -c 'tessera-train:' <<< "$out") -eq 1 ]] \
  && pass "said once for both ranks: $(grep -Em1 "$want" <<< "$out")" \
  || { fail "want one line /[all 2 ranks] ... $want/:"; sed 's/^/    /' <<< "$out"; }
grep -q '^step ' <<< "$out" && fail "a training step ran" || pass "no training step ran"
[[ ! -e "$WORK/run/model.h5" ]] && pass "no weights written" || fail "model.h5 written"
finish
