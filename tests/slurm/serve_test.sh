#!/usr/bin/env bash
# scripts/slurm/serve.sbatch on one node, 2 tasks, --tp 1 (two dp replicas): the job prints its
# URL, the server becomes ready, answers /health 200 and a completion (the same text as the same
# seeded request on the replicas' other half), /metrics names both replicas; then
# `scancel --signal=TERM` drains it and the job COMPLETES with exit 0 on every task.
source "$(dirname "$0")/lib.sh"
require_cluster
make_small_data "$WORK/data"
"$TESSERA_BIN/tessera-train" "$TESSERA_ROOT/configs/tiny.yaml" $(small_sets "$WORK/data") \
  --set train.steps=5 --set train.val_every=0 > "$WORK/train.log" 2>&1 ||
  { cat "$WORK/train.log"; fail "training the model to serve"; finish; exit 1; }

id=$(TESSERA_BIN=$TESSERA_BIN submit "$SLURM_SCRIPTS/serve.sbatch" "$WORK/run/model.h5" --tp 1 \
  --port 0 --host 127.0.0.1 --debug-step-delay-ms 20) ||
  { fail "sbatch serve.sbatch: $id"; finish; exit 1; }
out=$(job_output tessera-serve "$id")
port=""
for _ in $(seq 1 600); do  # at most 60 s to start and load
  [[ -f $out ]] && port=$(sed -n 's/^tessera-serve: ready on http:\/\/[^:]*:\([0-9][0-9]*\) .*/\1/p' "$out")
  [[ -n $port ]] && break
  state=$(scontrol show job -o "$id" 2> /dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
  [[ $state == PENDING || $state == RUNNING || $state == CONFIGURING ]] || break
  sleep 0.1
done
if [[ -z $port ]]; then
  fail "job $id: no ready line within 60 s:"
  [[ -f $out ]] && sed 's/^/    /' "$out"
  scancel "$id" 2> /dev/null
  finish
  exit 1
fi
grep -q "^tessera-serve: job $id on .*: http://127.0.0.1:<the port in the ready line below>" "$out" &&
  pass "job $id printed its URL: $(head -1 "$out")" || { fail "no URL line:"; head -3 "$out"; }
grep -q "dp 2 x tp 1" "$out" && pass "ready: $(grep 'ready on' "$out")" ||
  fail "the ready line does not say dp 2 x tp 1: $(grep 'ready on' "$out")"

url="http://127.0.0.1:$port"
code=$(curl -s -o "$WORK/health" -w '%{http_code}' "$url/health")
[[ $code == 200 ]] && pass "/health 200: $(cat "$WORK/health")" || fail "/health: $code"
body='{"prompt": "ROMEO:", "max_tokens": 12, "temperature": 0.8, "top_k": 40, "seed": 7}'
for k in 1 2; do  # the first two at once: one on each replica
  curl -s -D "$WORK/h$k" -o "$WORK/c$k" "$url/v1/completions" -H 'Content-Type: application/json' \
    -d "$body" &
done
wait
text1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["choices"][0]["text"])' "$WORK/c1" 2>&1)
text2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["choices"][0]["text"])' "$WORK/c2" 2>&1)
replicas=$(cat "$WORK/h1" "$WORK/h2" | grep -i '^x-tessera-replica' | tr -d '\r' | awk '{print $2}' | sort | tr '\n' ' ')
grep -q '200 OK' "$WORK/h1" && grep -q '200 OK' "$WORK/h2" && [[ -n $text1 && $text1 == "$text2" ]] &&
  pass "two completions, replicas [ $replicas], the same seeded text: ${text1//$'\n'/ }" ||
  { fail "completions: [$text1] [$text2]"; cat "$WORK/h1" "$WORK/c1" "$WORK/h2" "$WORK/c2"; }
[[ $replicas == "0 1 " ]] && pass "the two concurrent requests ran on replicas 0 and 1" ||
  fail "replicas of the two concurrent requests: [$replicas]"
curl -s "$url/metrics" > "$WORK/metrics"
grep -q 'tessera_replica_requests_routed_total{replica="1"} 1' "$WORK/metrics" &&
  pass "/metrics: replica 1 routed 1" || { fail "/metrics per replica:"; grep replica "$WORK/metrics"; }

scancel --signal=TERM "$id"
read -r state code < <(wait_job "$id" 60)
[[ $state == COMPLETED && $code == 0:0 ]] && grep -q 'drained and stopped' "$out" &&
  pass "scancel --signal=TERM: drained, job $id COMPLETED (exit $code)" ||
  { fail "job $id after SIGTERM: $state (exit $code):"; sed 's/^/    /' "$out"; }
finish
