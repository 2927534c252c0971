#!/usr/bin/env bash
# parallel.node_shared in tessera-train: ZeRO-1 on one node exchanges through node-shared memory
# by default (auto) and says so, off keeps the MPI exchange and says that, both give the same
# losses at dp 2; on without optim.zero=1 is a config error naming the key and the fix, on every
# rank, with no step run.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")

train() {  # out_dir extra-sets...
  local dir=$1
  shift
  timeout 120 mpirun --oversubscribe --bind-to none -n 2 "$TESSERA_BIN/tessera-train" \
    configs/tiny.yaml $sets --set train.steps=6 --set train.log_every=1 --set train.out_dir="$WORK/$dir" \
    --set checkpoint.dir="$WORK/$dir/ckpt" --set optim.zero=1 "$@" 2>&1
}
losses() { grep -Eo 'step +[0-9]+/[0-9]+ \| loss [0-9.]+' <<< "$1" | awk '{print $NF}'; }

shared=$(train shared)
rc=$?
[[ $rc -eq 0 ]] && pass "zero 1 at dp 2, node_shared auto: exit 0" \
  || { fail "zero 1 at dp 2, node_shared auto: exit $rc"; sed 's/^/    /' <<< "$shared"; }
grep -q "exchanged through node-shared memory" <<< "$shared" \
  && pass "auto on one node: $(grep -m1 'optimizer:' <<< "$shared")" \
  || fail "auto did not say it uses node-shared memory"
mpi=$(train mpi --set parallel.node_shared=off)
grep -q "exchanged over MPI" <<< "$mpi" && pass "off: $(grep -m1 'optimizer:' <<< "$mpi")" \
  || fail "off did not say it exchanges over MPI"
a=$(losses "$shared")
b=$(losses "$mpi")
[[ -n $a && $(wc -l <<< "$a") -eq 6 && $a == "$b" ]] && pass "the 6 printed losses agree: $(tr '\n' ' ' <<< "$a")" \
  || fail "losses differ or are missing: auto [$(tr '\n' ' ' <<< "$a")] off [$(tr '\n' ' ' <<< "$b")]"

bad=$(timeout 60 mpirun --oversubscribe --bind-to none -n 2 "$TESSERA_BIN/tessera-train" \
  configs/tiny.yaml $sets --set train.steps=2 --set parallel.node_shared=on 2>&1)
rc=$?
[[ $rc -ne 0 && $rc -ne 124 ]] && pass "node_shared on with zero 0: exit $rc" \
  || fail "node_shared on with zero 0: exit $rc"
grep -q "parallel.node_shared.*set optim.zero=1" <<< "$bad" \
  && pass "names the key and the fix: $(grep -m1 'parallel.node_shared' <<< "$bad")" \
  || { fail "no error naming parallel.node_shared and optim.zero=1"; sed 's/^/    /' <<< "$bad"; }
grep -q '^step ' <<< "$bad" && fail "a training step ran" || pass "no training step ran"
finish
