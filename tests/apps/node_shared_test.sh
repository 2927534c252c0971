#!/usr/bin/env bash
# parallel.node_shared in tessera-train: at dp 2 on one node, ZeRO-1 exchanges through node-shared
# memory by default (auto) and the replicated optimizer (zero 0) with on, and each says so; off
# keeps the MPI exchange and says that, and the exchanges give the same losses; on with
# parallel.sparse_embedding=on is a config error naming both keys and the fix, on every rank,
# with no step run.
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
    --set checkpoint.dir="$WORK/$dir/ckpt" "$@" 2>&1
}
losses() { grep -Eo 'step +[0-9]+/[0-9]+ \| loss [0-9.]+' <<< "$1" | awk '{print $NF}'; }

for zero in 1 0; do
  mode=auto
  ((zero == 0)) && mode=on
  shared=$(train "shared$zero" --set optim.zero=$zero --set parallel.node_shared=$mode)
  rc=$?
  [[ $rc -eq 0 ]] && pass "zero $zero at dp 2, node_shared $mode: exit 0" \
    || { fail "zero $zero at dp 2, node_shared $mode: exit $rc"; sed 's/^/    /' <<< "$shared"; }
  grep -q "optim.zero $zero.*exchanged through node-shared memory" <<< "$shared" \
    && pass "$mode on one node: $(grep -m1 'optimizer:' <<< "$shared")" \
    || fail "zero $zero: $mode did not say it uses node-shared memory"
  mpi=$(train "mpi$zero" --set optim.zero=$zero --set parallel.node_shared=off)
  grep -q "optim.zero $zero.*exchanged over MPI" <<< "$mpi" \
    && pass "off: $(grep -m1 'optimizer:' <<< "$mpi")" \
    || fail "zero $zero: off did not say it exchanges over MPI"
  a=$(losses "$shared")
  b=$(losses "$mpi")
  [[ -n $a && $(wc -l <<< "$a") -eq 6 && $a == "$b" ]] \
    && pass "zero $zero: the 6 printed losses agree: $(tr '\n' ' ' <<< "$a")" \
    || fail "zero $zero: losses differ or are missing: $mode [$(tr '\n' ' ' <<< "$a")] off [$(tr '\n' ' ' <<< "$b")]"
done

default=$(train default0 --set optim.zero=0)
grep -q "optim.zero 0.*exchanged over MPI" <<< "$default" \
  && pass "zero 0, auto (the default): $(grep -m1 'optimizer:' <<< "$default")" \
  || fail "zero 0 with node_shared auto did not keep the MPI exchange"

bad=$(timeout 60 mpirun --oversubscribe --bind-to none -n 2 "$TESSERA_BIN/tessera-train" \
  configs/tiny.yaml $sets --set train.steps=2 --set parallel.node_shared=on \
  --set parallel.sparse_embedding=on 2>&1)
rc=$?
[[ $rc -ne 0 && $rc -ne 124 ]] && pass "node_shared on with sparse_embedding on: exit $rc" \
  || fail "node_shared on with sparse_embedding on: exit $rc"
grep -q "parallel.node_shared.*parallel.sparse_embedding=on.*set one of them to auto" <<< "$bad" \
  && pass "names the keys and the fix: $(grep -m1 'parallel.node_shared' <<< "$bad")" \
  || { fail "no error naming parallel.node_shared, parallel.sparse_embedding and the fix"; sed 's/^/    /' <<< "$bad"; }
grep -q '^step ' <<< "$bad" && fail "a training step ran" || pass "no training step ran"
finish
