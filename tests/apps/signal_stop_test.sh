#!/usr/bin/env bash
# Save-and-stop on a signal, as a scheduler sends it: SIGTERM to a training run mid-run makes it
# exit 0 within 10 s (wall time measured from the kill), with a checkpoint of the step it had
# reached (the last step in metrics.jsonl) that `latest` names and `tessera-ckpt verify` calls
# sound; resuming from it gives the uninterrupted run's loss, grad_norm and lr, compared at full
# precision in metrics.jsonl. Three ways: SIGTERM to a 1-rank run; SIGTERM to ONE rank of a 1x2
# job (every rank must still stop at the same step); SIGUSR1 to mpirun, which forwards it to every
# rank. (SIGTERM to mpirun itself is Open MPI's: it kills the ranks; docs/RELIABILITY.md.)
# Every run has 1000 warmup steps, so the lr of a step does not depend on train.steps.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
make_small_data "$WORK/data"
sets="$(small_sets "$WORK/data") --set train.val_every=0 --set train.log_every=1"
sets+=" --set optim.warmup_steps=1000"
train=("$TESSERA_BIN/tessera-train" configs/tiny.yaml)
mpi2=(timeout 120 mpirun --oversubscribe --bind-to none -n 2)

# same_steps REF GOT SKIP FIRST LAST: GOT's records after its first SKIP lines (what a resume
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

# wait_steps FILE N: until FILE (metrics.jsonl) holds N records (30 s at most).
wait_steps() {
  for _ in $(seq 1 300); do
    [[ -s $1 ]] && (($(wc -l < "$1") >= $2)) && return 0
    sleep 0.1
  done
  return 1
}

# stop_case NAME NRANKS SIGNAL TARGET: starts a run of 100000 steps on 1 rank or a 1x2 grid, sends
# SIGNAL to TARGET once it has run 3 steps (self: tessera-train, or mpirun; one-rank: one of
# mpirun's tessera-train ranks) and checks the stop; then resumes to the stop step + 3 and
# compares with an uninterrupted run of that many steps on the same grid.
stop_case() {
  local name=$1 nranks=$2 signal=$3 target=$4
  local dir="$WORK/$name" run=()
  local grid=""
  [[ $nranks -eq 2 ]] && run=("${mpi2[@]}") && grid="--set parallel.tp=2"
  mkdir -p "$dir"
  local opts="$sets $grid --set train.out_dir=$dir/run --set checkpoint.dir=$dir/ck"
  "${run[@]}" "${train[@]}" $opts --set train.steps=100000 > "$dir/stop.log" 2>&1 &
  local pid=$!
  if ! wait_steps "$dir/run/metrics.jsonl" 3; then
    fail "$name: no 3 steps within 30 s"; kill $pid; tail -5 "$dir/stop.log"; return
  fi
  # $pid is tessera-train, or `timeout` over mpirun over the ranks.
  local victim=$pid
  [[ $nranks -eq 2 ]] && victim=$(pgrep -P $pid -x mpirun)
  [[ $target == one-rank ]] && victim=$(pgrep -P "$victim" -x tessera-train | tail -1)
  [[ -n $victim ]] || { fail "$name: no process to signal under $pid"; kill $pid; return; }
  local who
  who=$(ps -o comm= -p "$victim")
  [[ $target == one-rank ]] && who="one rank ($who) of two"
  local start
  start=$(date +%s.%N)
  kill -"$signal" "$victim"
  wait $pid
  local rc=$? took
  took=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  [[ $rc -eq 0 ]] && awk -v t="$took" 'BEGIN { exit !(t <= 10) }' \
    && pass "$name: SIG$signal to $who: exit 0 ${took}s after the signal" \
    || { fail "$name: SIG$signal to $who: exit $rc after ${took}s (want 0 within 10 s)"
         tail -5 "$dir/stop.log"; return; }
  local stopped last latest
  stopped=$(sed -n 's/.*stopping after step \([0-9]*\) on a signal (checkpoint written).*/\1/p' \
    "$dir/stop.log" | sort -u)
  last=$(tail -1 "$dir/run/metrics.jsonl" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["step"])')
  latest=$(cat "$dir/ck/latest" 2>/dev/null)
  if [[ -z $stopped || $stopped != "$last" || $latest != "$(printf 'step_%08d.h5' "$last")" ]]; then
    fail "$name: stop line says step '$stopped', metrics.jsonl ends at $last, latest names '$latest'"
    return
  fi
  local out
  out=$("$TESSERA_BIN/tessera-ckpt" verify "$dir/ck/$latest" 2>&1) \
    && [[ $out == *": sound "* ]] \
    && pass "$name: checkpoint of the current step $stopped: $out" \
    || { fail "$name: verify $latest: $out"; return; }
  [[ $(ls "$dir/ck" | grep -c tmp) -eq 0 ]] || fail "$name: temporary files left: $(ls "$dir/ck")"

  local total=$((stopped + 3)) kept
  kept=$(wc -l < "$dir/run/metrics.jsonl")
  "${run[@]}" "${train[@]}" $opts --set train.steps=$total --resume > "$dir/resume.log" 2>&1 \
    || { fail "$name: resume"; tail -5 "$dir/resume.log"; return; }
  "${run[@]}" "${train[@]}" $sets $grid --set train.out_dir="$dir/ref" --set train.steps=$total \
    > "$dir/ref.log" 2>&1 || { fail "$name: uninterrupted run"; tail -5 "$dir/ref.log"; return; }
  local diff
  diff=$(same_steps "$dir/ref/metrics.jsonl" "$dir/run/metrics.jsonl" "$kept" $((stopped + 1)) \
    $total) \
    && pass "$name: resumed steps $((stopped + 1))-$total equal the uninterrupted run's (loss, grad_norm, lr; full precision)" \
    || fail "$name: resumed steps differ from the uninterrupted run: $diff"
}

stop_case one-rank-sigterm 1 TERM self
stop_case one-of-two-ranks-sigterm 2 TERM one-rank
stop_case mpirun-sigusr1 2 USR1 self
finish
