#!/usr/bin/env bash
# tessera-plan end to end: with a cluster file it ranks GPT-2 350M's layouts on 8 and 64 H100s
# (the best one's command runs tessera-train with the layout's keys, and on 8 GPUs the layouts
# that do not fit are named); with --measure under mpirun at 1 and 2 ranks it measures this
# machine and ranks the tiny model's layouts of that world size; a JSON line per layout; bad
# input gets a one-line error naming the fix.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
plan="$TESSERA_BIN/tessera-plan"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1

check_plan() {
  local name=$1 world=$2
  shift 2
  if ! timeout 300 "$@" > "$WORK/out" 2> "$WORK/err"; then
    fail "$name: exit non-zero"; sed 's/^/    /' "$WORK/err" "$WORK/out"; return
  fi
  if ! grep -Eq "^  run:  mpirun -n $world tessera-train .* --set parallel\.tp=[0-9]+ --set train\.micro_batch_size=[0-9]+" "$WORK/out"; then
    fail "$name: no run command for $world ranks"; sed 's/^/    /' "$WORK/out"; return
  fi
  if ! grep -Eq "^  1    dp [0-9]+ x tp [0-9]+, micro" "$WORK/out"; then
    fail "$name: no ranked table"; sed 's/^/    /' "$WORK/out"; return
  fi
  # The table is sorted by its step-time column.
  if ! awk '/^  [0-9]+ +dp /{ v=$(NF-6); if (v+0 < prev) bad=1; prev=v+0 } END { exit bad }' "$WORK/out"; then
    fail "$name: table not sorted by step time"; sed 's/^/    /' "$WORK/out"; return
  fi
  pass "$name: $(grep '^  best:' "$WORK/out" | sed 's/^ *//')"
}

check_plan "350M on 8 H100" 8 "$plan" configs/gpt2-350m.yaml --cluster configs/clusters/h100-dgx.yaml \
  --gpus 8 --set train.batch_size=512
grep -q "cannot run here: .*needs .* GB of 80.0 GB per device" "$WORK/out" &&
  pass "350M on 8 H100: layouts that do not fit are named" ||
  fail "350M on 8 H100: no memory refusal listed"
check_plan "1.3B on 64 H100" 64 "$plan" configs/gpt3-1.3b.yaml --cluster configs/clusters/h100-dgx.yaml \
  --gpus 64
for n in 1 2; do
  check_plan "tiny measured at $n ranks" "$n" mpirun -n "$n" --oversubscribe --bind-to none \
    "$plan" configs/tiny.yaml --measure --set train.batch_size=4 --threads 1
done
if "$plan" configs/tiny.yaml --cluster configs/clusters/h100-dgx.yaml --gpus 4 --json > "$WORK/json" &&
  python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert rows and all({"dp", "tp", "micro", "zero", "step_s", "memory_gb", "fits"} <= r.keys() for r in rows)
assert all(r["dp"] * r["tp"] == 4 for r in rows)
fit = [r["step_s"] for r in rows if r["fits"]]
assert fit == sorted(fit)
' "$WORK/json"; then
  pass "--json: one line per layout of 4 devices, runnable ones sorted"
else
  fail "--json output"; head -3 "$WORK/json"
fi

expect_error "neither --cluster nor --measure" "give exactly one of --cluster FILE .* and --measure" \
  "$plan" configs/tiny.yaml
expect_error "missing cluster file" "cluster file 'nope.yaml' not found; give a file such as" \
  "$plan" configs/tiny.yaml --cluster nope.yaml
printf 'nodes: 1\n' > "$WORK/c.yaml"
expect_error "incomplete cluster file" "key 'devices_per_node' is missing; add it" \
  "$plan" configs/tiny.yaml --cluster "$WORK/c.yaml"
expect_error "--gpus not whole nodes" "--gpus 12 is not whole nodes of 8 devices" \
  "$plan" configs/tiny.yaml --cluster configs/clusters/h100-dgx.yaml --gpus 12
expect_error "--gpus with --measure" "--gpus is for a cluster file" \
  "$plan" configs/tiny.yaml --measure --gpus 8
finish
