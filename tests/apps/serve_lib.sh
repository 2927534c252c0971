# Shared by the tessera-serve app tests (serve_test.sh, serve_dp_test.sh,
# serve_api_features_test.sh; sourced after lib.sh): starting servers on port 0, their ranks,
# bounded waits, stopping, and running a check of the test's Python client (which imports
# tests/apps/serve_client.py). A trap kills any server left behind, so a test cannot hang.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
SERVE="$TESSERA_BIN/tessera-serve"
SERVE_PY=/usr/bin/python3
# The most seconds one server may run (start_server's `timeout`); a test may raise it.
SERVER_LIMIT_S=${SERVER_LIMIT_S:-120}

# Server processes started (the `timeout` wrappers); the trap kills what is left of them.
servers=()
serve_cleanup() {
  local p
  for p in "${servers[@]}"; do
    if kill -0 "$p" 2> /dev/null; then
      pkill -KILL -P "$p" 2> /dev/null
      kill -KILL "$p" 2> /dev/null
    fi
  done
  rm -rf "$WORK"
}
trap serve_cleanup EXIT

# start_server LOG ARGS...: starts ARGS (at most SERVER_LIMIT_S) in the background, waits (at
# most 30 s) for the ready line, and sets $port and $server (the wrapper's pid). Fails otherwise.
start_server() {
  local log=$1
  shift
  timeout -k 5 "$SERVER_LIMIT_S" "$@" > "$log" 2>&1 &
  server=$!
  servers+=("$server")
  port=""
  for _ in $(seq 1 300); do
    port=$(sed -n 's/^tessera-serve: ready on http:\/\/[^:]*:\([0-9][0-9]*\) .*/\1/p' "$log")
    [[ -n $port ]] && return 0
    kill -0 "$server" 2> /dev/null || break
    sleep 0.1
  done
  fail "server did not become ready ($*):"
  sed 's/^/    /' "$log"
  return 1
}

# The tessera-serve processes under a wrapper pid (one, or the mpirun ranks).
rank_pids() {
  local kids k
  kids=$(pgrep -P "$1")
  for k in $kids; do
    if [[ $(cat /proc/"$k"/comm 2> /dev/null) == tessera-serve ]]; then
      echo "$k"
    else
      pgrep -P "$k"
    fi
  done
}

# wait_exit PID SECONDS: sets $rc to the exit code of background job PID, or 124 if it is still
# running after SECONDS (not in a subshell: only this shell can wait for its jobs).
wait_exit() {
  local pid=$1 limit=$2
  for _ in $(seq 1 $((limit * 10))); do
    kill -0 "$pid" 2> /dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2> /dev/null; then
    rc=124
  else
    wait "$pid"
    rc=$?
  fi
}

# sigterm_ranks: SIGTERM to every rank of $server (not to mpirun, which would kill the job).
sigterm_ranks() {
  kill -TERM $(rank_pids "$server") 2> /dev/null
}

# client CHECK ARGS...: runs one check of $WORK/client.py (at most 60 s); its "ok:" and "FAIL:"
# lines count as passes and failures.
client() {
  local out rc
  out=$(PYTHONPATH="$TESSERA_ROOT/tests/apps" timeout -k 5 60 "$SERVE_PY" "$WORK/client.py" "$@" 2>&1)
  rc=$?
  echo "$out"
  passes=$((passes + $(grep -c '^ok: ' <<< "$out")))
  failures=$((failures + $(grep -c '^FAIL: ' <<< "$out")))
  [[ $rc -eq 0 ]] || fail "client $1 exited $rc"
}
