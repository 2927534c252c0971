#!/usr/bin/env bash
# Stalled and killed ranks never hang the job.
# Stalled: with parallel.collective_timeout_s=3, one rank stopped by SIGSTOP (at 2 ranks 1x2 and
# 2x1, at 4 ranks 2x2: injected in step 3 with TESSERA_INJECT_FAULT=stop@r, sent from outside with
# kill -STOP, and injected inside a checkpoint write with TESSERA_CKPT_STOP) ends every rank
# within timeout + 10 s of the stop, with a non-zero exit and a waiting rank's watchdog message
# naming the call, the communicator, the phase and the step, and the stopped rank (all ranks
# share this node, so /proc shows it); no process of the job is left.
# Killed: kill -9 of one rank mid-training (outside any checkpoint write) at 2 and 4 ranks ends
# every rank within 10 s, non-zero. And a healthy run with the watchdog on finishes (no false
# alarm). Prints each detection time (stop to job end).
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")
timeout_s=3
tag=watchdog-test-$$

# Every process of our jobs carries TESSERA_TEST_TAG=$tag. pids_of [RANK]: their pids (of one
# world rank when given).
pids_of() {
  local p env
  for p in $(pgrep -x tessera-train); do
    env=$(tr '\0' '\n' 2> /dev/null < "/proc/$p/environ") || continue
    grep -qx "TESSERA_TEST_TAG=$tag" <<< "$env" || continue
    [[ $# -eq 0 ]] || grep -qx "OMPI_COMM_WORLD_RANK=$1" <<< "$env" || continue
    # A zombie has ended; only its parent has not reaped it yet.
    [[ $(awk '{print $3}' "/proc/$p/stat" 2> /dev/null) == Z ]] && continue
    echo "$p"
  done
}
cleanup() {
  local p
  for p in $(pids_of); do kill -CONT "$p" 2> /dev/null; kill -9 "$p" 2> /dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
# stamp FILE: copies stdin to FILE, each line prefixed with the time it arrived.
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(now)" "$line"; done > "$1"; }

# start N FAULT CKPT_STOP [args]: starts an N-rank training job in the background (pid in $job)
# with TESSERA_INJECT_FAULT=FAULT and TESSERA_CKPT_STOP=CKPT_STOP (either may be ''); its stdout
# goes to $WORK/out, its stderr, time-stamped, to $WORK/err.
start() {
  local n=$1 fault=$2 ckpt_stop=$3
  shift 3
  rm -rf "$WORK/run" "$WORK/ckpt"
  # Emptied here, not by the background job's redirection, which may come after the first look.
  : > "$WORK/out"
  : > "$WORK/err"
  env TESSERA_TEST_TAG=$tag TESSERA_INJECT_FAULT="$fault" TESSERA_CKPT_STOP="$ckpt_stop" \
    timeout 120 mpirun --oversubscribe --bind-to none -n "$n" \
    -x TESSERA_TEST_TAG -x TESSERA_INJECT_FAULT -x TESSERA_CKPT_STOP \
    "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set train.steps=200 \
    --set train.log_every=1 --set parallel.collective_timeout_s=$timeout_s "$@" \
    > "$WORK/out" 2> >(stamp "$WORK/err") &
  job=$!
}
# wait_for_step S RANK: until the job has printed step S's progress line and RANK's pid is known
# (in $victim); false if the job ended first or took over 60 s.
wait_for_step() {
  local deadline=$((SECONDS + 60))
  victim=
  until grep -Eq "^step +$1/" "$WORK/out" && victim=$(pids_of "$2") && [[ -n $victim ]]; do
    kill -0 "$job" 2> /dev/null || return 1
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

# check_end NAME T0 LIMIT PATTERN: the job started by `start` ends within LIMIT s of T0 (the stop
# or kill), exits non-zero, stderr matches the extended regex PATTERN, and none of its processes
# remains.
check_end() {
  local name=$1 t0=$2 limit=$3 pattern=$4 rc took left
  wait "$job"
  rc=$?
  took=$(secs "$t0" "$(now)")
  sleep 0.5  # lets the stamping reader drain
  left=$(pids_of | tr '\n' ' ')
  if [[ $rc -eq 0 ]]; then
    fail "$name: exit code 0"
  elif [[ $rc -eq 124 ]]; then
    fail "$name: hung (killed by timeout after 120 s)"
  elif awk -v t="$took" -v l="$limit" 'BEGIN { exit !(t > l) }'; then
    fail "$name: the job ended ${took} s after the stop or kill (limit ${limit} s)"
  elif ! grep -Eq -- "$pattern" "$WORK/err"; then
    fail "$name: stderr does not match /$pattern/:"; head -8 "$WORK/err" | sed 's/^/    /'
  elif [[ -n $left ]]; then
    fail "$name: processes left after the job ended: $left"
  else
    pass "$name: exit $rc ${took} s after the stop or kill: $(grep -Em1 -- "$pattern" "$WORK/err" | cut -d' ' -f2-)"
  fi
}
# The time of the injected stop: the stamp of the line the stopping rank printed.
stop_time() {
  local t
  for _ in $(seq 100); do
    t=$(grep -m1 'injected SIGSTOP' "$WORK/err" | cut -d' ' -f1)
    [[ -n $t ]] && { echo "$t"; return; }
    sleep 0.1
  done
  now
}
limit=$((timeout_s + 10))
stuck="watchdog: stuck [0-9.]+ s in"

# 1. Injected stops in step 3, between forward and backward.
start 2 stop@1 '' --set parallel.tp=2
check_end "1x2, rank 1 stopped in step 3" "$(stop_time)" $limit \
  "^\S+ \[rank 0 \(dp 0, tp 0\)\] $stuck all_reduce over tp during backward of step 3/200: a peer rank in 'tp' is stopped.*; on this node rank 1 \(dp 0, tp 1; pid [0-9]+\) is stopped \(SIGSTOP or a debugger\); ending the job"
start 2 stop@0 '' --set parallel.tp=1
check_end "2x1, rank 0 stopped in step 3" "$(stop_time)" $limit \
  "^\S+ \[rank 1 \(dp 1, tp 0\)\] $stuck the wait for a non-blocking all_reduce over dp during the gradient all-reduce of step 3/200: .*on this node rank 0 \(dp 0, tp 0; pid [0-9]+\) is stopped .*raise parallel.collective_timeout_s \(now 3\)"
start 4 stop@2 '' --set parallel.tp=2
check_end "2x2, rank 2 stopped in step 3" "$(stop_time)" $limit \
  "^\S+ \[rank [013] \(dp [01], tp [01]\)\] $stuck .* of step 3/200: a peer rank.*on this node rank 2 \(dp 1, tp 0; pid [0-9]+\) is stopped"

# 2. A stop sent from outside (kill -STOP) to rank 2 of 4 mid-training: the detection time.
start 4 '' '' --set parallel.tp=2
if wait_for_step 5 2; then
  t0=$(now)
  kill -STOP $victim
  check_end "2x2, kill -STOP of rank 2 (pid $victim) after step 5" "$t0" $limit \
    "^\S+ \[rank [013] \(dp [01], tp [01]\)\] $stuck .* of step [0-9]+/200: a peer rank.*on this node rank 2 \(dp 1, tp 0; pid $victim\) is stopped"
else
  fail "2x2 kill -STOP: the job did not reach step 5"; tail -3 "$WORK/err"
fi

# 3. A stop inside a checkpoint write (rank 1 of 2 before its 51st dataset of the step-4
# checkpoint): the other waits in the checkpoint's collectives.
start 2 '' dataset-50:1:1 --set parallel.tp=2 --set checkpoint.dir="$WORK/ckpt" \
  --set checkpoint.every=4
check_end "1x2, rank 1 stopped inside a checkpoint write" "$(stop_time)" $limit \
  "^\S+ \[rank 0 \(dp 0, tp 0\)\] $stuck a checkpoint's status agreement over world during a checkpoint write of step 4/200: .*on this node rank 1 \(dp 0, tp 1; pid [0-9]+\) is stopped"

# 4. kill -9 of one rank mid-training (no checkpoint being written): MPI's own detection.
for spec in 2:1:1 4:2:3; do
  IFS=: read -r n tp victim_rank <<< "$spec"
  start "$n" '' '' --set parallel.tp="$tp"
  if wait_for_step 5 "$victim_rank"; then
    t0=$(now)
    kill -9 $victim
    check_end "$n ranks, kill -9 of rank $victim_rank (pid $victim) after step 5" "$t0" 10 \
      "process rank $victim_rank .* exited on signal 9"
  else
    fail "$n ranks kill -9: the job did not reach step 5"; tail -3 "$WORK/err"
  fi
done

# 5. No false alarm: a healthy 2-rank run with checkpoints and validation finishes.
TESSERA_TEST_TAG=$tag timeout 120 mpirun --oversubscribe --bind-to none -n 2 -x TESSERA_TEST_TAG \
  "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set train.steps=20 --set parallel.tp=2 \
  --set parallel.collective_timeout_s=$timeout_s --set checkpoint.dir="$WORK/ckpt" \
  --set checkpoint.every=5 > "$WORK/out" 2> "$WORK/err"
rc=$?
if [[ $rc -eq 0 ]] && ! grep -q watchdog "$WORK/err" && grep -Eq '^step +20/20 ' "$WORK/out"; then
  pass "healthy 1x2 run with the watchdog at ${timeout_s} s: 20 steps, 4 checkpoints, exit 0"
else
  fail "healthy run: exit $rc"; tail -5 "$WORK/err"
fi
finish
