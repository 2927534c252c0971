#!/usr/bin/env bash
# tessera-serve over dp replicas (docs/SERVING.md, "dp replicas and routing"; "KV-cache budget"),
# on a small model trained here, servers on port 0. Checks:
#   - 12 seeded requests, sent at once, give the same texts at 1x1, 1x2, 2x1 and 2x2 (dp x tp),
#     streamed and not, the 1x2 server with a prefill budget of 2 tokens a step
#     (--max-prefill-tokens: the prompts are prefilled over many steps, oldest first), the others
#     with the CPU's default of 128 (the ready line says which); at dp 2 they
#     are spread over both replicas (X-Tessera-Replica headers, and /metrics'
#     tessera_replica_requests_routed_total agrees with them)
#   - 2x1: a streaming client on replica 1 hangs up: replica 1's running count drops to 0 and the
#     request is counted cancelled; SIGTERM with a stream in flight on each replica: /health 503,
#     both streams finish every token, every rank exits 0 (mpirun exit 0)
#   - 2x2: the same drain over four ranks
#   - 1x1 with --kv-cache-mb for 48 positions (3 blocks of 16): a second concurrent request waits
#     while the first runs (its footprint, in whole blocks, does not fit), then both finish;
#     /metrics shows the KV bytes in use and the allocation equal to the budget (the paged pool);
#     a request that could never fit is a 400 naming kv_cache_mb; a negative --kv-cache-mb, or
#     one below a block, is refused
# Every wait is bounded; a trap kills any server left behind.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
source "$(dirname "$0")/serve_lib.sh"
mpirun_n() { echo mpirun -n "$1" --oversubscribe --bind-to none; }

cat > "$WORK/client.py" <<'PY'
"""HTTP checks of tessera-serve over dp replicas; prints ok:/FAIL: lines."""
import json
import os
import signal
import socket
import threading
import time

import serve_client as sc
from serve_client import call, check, concurrently, metrics, wait_metric


def complete(body):
    """(status, replica, text or error message)."""
    status, headers, text = call("POST", "/v1/completions", body)
    j = json.loads(text)
    out = j["choices"][0]["text"] if status == 200 else j.get("error", {}).get("message")
    return status, headers.get("x-tessera-replica"), out


def stream(body, hang_up_after=None, events_out=None):
    """(status, replica, text, ended with [DONE])."""
    conn = sc.connect(60)
    conn.request("POST", "/v1/completions", body=json.dumps(dict(body, stream=True)),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    replica = r.getheader("X-Tessera-Replica")
    text, done, n = "", False, 0
    while True:
        line = r.readline()
        if not line:
            break
        line = line.decode("utf-8").rstrip("\n")
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            done = True
            break
        e = json.loads(line[6:])
        if e.get("choices"):
            text += e["choices"][0]["text"]
        n += 1
        if events_out is not None:
            events_out.append(n)
        if hang_up_after is not None and n >= hang_up_after:
            conn.sock.shutdown(socket.SHUT_RDWR)
            break
    conn.close()
    return r.status, replica, text, done


def seeded(i):
    return {"prompt": "ROMEO:", "max_tokens": 24, "temperature": 0.9, "top_k": 40, "seed": 500 + i}


def cmd_texts(tag, save, expected_file, dp):
    dp = int(dp)
    results = concurrently(complete, [seeded(i) for i in range(12)])
    texts = [r[2] if r and r[0] == 200 else None for r in results]
    check(all(t is not None for t in texts) and len(set(texts)) > 1,
          f"{tag}: 12 concurrent seeded requests answered 200", str(results))
    streamed = concurrently(stream, [seeded(i) for i in (0, 5, 11)])
    check([s[2] for s in streamed] == [texts[0], texts[5], texts[11]] and all(s[3] for s in streamed),
          f"{tag}: streamed texts equal the non-streamed ones")
    if expected_file:
        expected = json.load(open(expected_file))
        check(texts == expected, f"{tag}: the 12 texts equal 1x1's",
              "\n".join(f"{a!r} vs {b!r}" for a, b in zip(texts, expected) if a != b))
    if save:
        json.dump(texts, open(save, "w"))
    replicas = [r[1] for r in results] + [s[1] for s in streamed]
    m = metrics()
    if dp > 1:
        counts = {d: replicas.count(str(d)) for d in range(dp)}
        check(all(c >= 3 for c in counts.values()),
              f"{tag}: requests spread over the replicas (X-Tessera-Replica: {counts})", str(replicas))
        routed = {d: m.get(f'tessera_replica_requests_routed_total{{replica="{d}"}}') for d in range(dp)}
        check(all(routed[d] == counts[d] for d in range(dp)),
              f"{tag}: /metrics routed per replica agrees with the headers ({routed})")
        finished = sum(m.get(f'tessera_requests_finished_total{{reason="{r}"}}', 0)
                       for r in ("length", "stop"))
        check(finished == 15 and m.get("tessera_time_to_first_token_seconds_count") == 15,
              f"{tag}: /metrics totals sum the replicas (15 finished, 15 TTFT observations)")
    else:
        check(set(replicas) == {"0"}, f"{tag}: one replica, every request on replica 0")


def cmd_cancel():
    # Replica 0 busy with a long request; the next goes to replica 1, whose client hangs up.
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", complete(
        {"prompt": "ROMEO:", "max_tokens": 50, "temperature": 0})))
    t.start()
    wait_metric('tessera_replica_requests_running{replica="0"}', 1)
    status, replica, text, done = stream(
        {"prompt": "ROMEO:", "max_tokens": 50, "temperature": 0.9, "seed": 3}, hang_up_after=2)
    check(status == 200 and replica == "1" and not done,
          f"2x1: a stream on replica {replica} read 2 events, then hung up")
    m = wait_metric('tessera_requests_finished_total{reason="cancelled"}', 1)
    check(m.get('tessera_requests_finished_total{reason="cancelled"}') == 1 and
          m.get('tessera_replica_requests_running{replica="1"}') == 0,
          "2x1: the hang-up on replica 1 cancelled it (cancelled 1, replica 1 running 0)",
          str({k: v for k, v in m.items() if "cancel" in k or "running" in k}))
    t.join(60)
    check(box.get("r", (None,))[0] == 200, "2x1: replica 0's request finished meanwhile")


def cmd_drain(tag, *pids):
    # One long stream per replica, then SIGTERM to every rank: both finish all their tokens.
    results = {}
    body = {"prompt": "ROMEO:", "max_tokens": 40, "temperature": 0.9, "seed": 9,
            "stream_options": {"include_usage": True}}

    def run(i):
        results[i] = stream(dict(body, seed=9 + i))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for i, t in enumerate(threads):
        t.start()
        m = wait_metric("tessera_requests_running", i + 1)
    check(m.get("tessera_requests_running") == 2, f"{tag}: two requests running before SIGTERM")
    for pid in pids:
        os.kill(int(pid), signal.SIGTERM)
    time.sleep(0.3)
    try:
        status, _, text = call("GET", "/health", timeout=5)
        check(status == 503 and json.loads(text)["status"] == "draining",
              f"{tag}: draining: /health 503", f"{status} {text}")
        status, _, j = complete({"prompt": "a", "max_tokens": 2})
        check(status == 503, f"{tag}: draining: a new request gets 503", f"{status} {j}")
    except OSError as e:
        check(False, f"{tag}: the server stopped answering while draining: {e}")
    for t in threads:
        t.join(60)
    replicas = sorted(r[1] for r in results.values())
    check(replicas == ["0", "1"], f"{tag}: the two streams ran on replicas {replicas}")
    check(all(r[0] == 200 and r[3] and len(r[2]) > 0 for r in results.values()),
          f"{tag}: draining: both streams finished with [DONE]", str(results))


def cmd_kv():
    # Budget 48 positions, 3 blocks of 16; each request 6 + 40 = 46, 3 blocks (48 positions):
    # the second waits for the first.
    body = {"prompt": "ROMEO:", "max_tokens": 40, "temperature": 0}
    status, _, j = complete(dict(body, max_tokens=57))  # 63 positions, 4 blocks > 3
    check(status == 400 and "needs 64 positions of KV cache (whole blocks of 16), over the "
          "whole KV-cache budget of 48 positions" in j and "ask for at most 42 tokens" in j and
          "kv_cache_mb" in j, f"kv: a request that could never fit: 400: {j}")
    results = {}
    threads = [threading.Thread(target=lambda i=i: results.setdefault(i, complete(body)))
               for i in range(2)]
    threads[0].start()
    wait_metric("tessera_requests_running", 1)
    threads[1].start()
    m = wait_metric("tessera_requests_waiting", 1)
    check(m.get("tessera_requests_running") == 1 and m.get("tessera_requests_waiting") == 1,
          "kv: the second concurrent request waits while the first runs (running 1, waiting 1)",
          str(m))
    check(m.get("tessera_kv_cache_used_bytes") == 48 * 1024 and
          m.get("tessera_kv_cache_budget_bytes") == 48 * 1024 and
          m.get("tessera_kv_cache_allocated_bytes") == 48 * 1024 and
          abs(m.get("tessera_kv_cache_usage_ratio", 0) - 1.0) < 1e-9,
          "kv: /metrics: 48 of 48 positions in use, and 48 allocated (the paged pool is the "
          "budget, not 16 slots x 64 positions)",
          str({k: v for k, v in m.items() if "kv" in k}))
    for t in threads:
        t.join(60)
    check([results.get(i, (None,))[0] for i in range(2)] == [200, 200] and
          results[0][2] == results[1][2], "kv: both finished, with the same greedy text")
    m = metrics()
    check(m.get("tessera_kv_cache_used_bytes") == 0, "kv: every reservation released")


if __name__ == "__main__":
    sc.main({"texts": cmd_texts, "cancel": cmd_cancel, "drain": cmd_drain, "kv": cmd_kv})
PY

# ---- A small model ------------------------------------------------------------------------------
make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")
timeout 120 "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set train.steps=60 \
  --set optim.warmup_steps=5 > "$WORK/train.log" 2>&1 \
  || { cat "$WORK/train.log"; fail "training run"; finish; exit 1; }
model="$WORK/run/model.h5"

# stop_server TAG LOG: SIGTERM to every rank; every rank must exit 0 after draining.
stop_server() {
  sigterm_ranks
  wait_exit "$server" 30
  [[ $rc -eq 0 ]] && grep -q 'drained and stopped' "$2" \
    && pass "$1: SIGTERM: drained, exit 0" \
    || { fail "$1: SIGTERM: exit $rc"; tail -20 "$2"; }
}

# ---- The same seeded texts at 1x1, 1x2, 2x1, 2x2 ------------------------------------------------
if start_server "$WORK/s11.log" "$SERVE" "$model" --port 0; then
  client texts "$port" 1x1 "$WORK/texts.json" "" 1
  stop_server 1x1 "$WORK/s11.log"
fi
[[ -s "$WORK/texts.json" ]] || { fail "no 1x1 texts to compare with"; finish; exit 1; }
for grid in "1 2" "2 1" "2 2"; do
  read -r dp tp <<< "$grid"
  budget=()
  [[ $grid == "1 2" ]] && budget=(--max-prefill-tokens 2)
  if start_server "$WORK/s$dp$tp.log" $(mpirun_n $((dp * tp))) "$SERVE" "$model" --port 0 \
    --tp "$tp" --debug-step-delay-ms 5 "${budget[@]}"; then
    grep -q "dp $dp x tp $tp" "$WORK/s$dp$tp.log" && pass "${dp}x$tp ready: $(grep 'ready on' "$WORK/s$dp$tp.log")" \
      || fail "${dp}x$tp: the ready line does not name the grid"
    want="prefill 128 tokens a step"  # the default on a CPU
    [[ ${#budget[@]} -gt 0 ]] && want="prefill 2 tokens a step"
    grep -q "$want" "$WORK/s$dp$tp.log" && pass "${dp}x$tp: $want" \
      || fail "${dp}x$tp: the ready line does not say '$want'"
    client texts "$port" "${dp}x$tp" "" "$WORK/texts.json" "$dp"
    if [[ $grid == "2 1" ]]; then
      kill -TERM $(rank_pids "$server")  # restarted below with slow steps
      wait_exit "$server" 30
      [[ $rc -eq 0 ]] && pass "2x1: SIGTERM when idle: exit 0" || fail "2x1: SIGTERM: exit $rc"
    else
      stop_server "${dp}x$tp" "$WORK/s$dp$tp.log"
    fi
  fi
done

# ---- 2x1 with slow steps: cancellation on replica 1, drain with a stream on each replica --------
if start_server "$WORK/s21slow.log" $(mpirun_n 2) "$SERVE" "$model" --port 0 --tp 1 \
  --debug-step-delay-ms 40; then
  client cancel "$port"
  client drain "$port" 2x1 $(rank_pids "$server")
  wait_exit "$server" 30
  [[ $rc -eq 0 ]] && grep -q 'draining (signal 15)' "$WORK/s21slow.log" \
    && pass "2x1: SIGTERM with a stream on each replica: drained, mpirun exit 0" \
    || { fail "2x1: drain: exit $rc"; tail -20 "$WORK/s21slow.log"; }
fi

# ---- 2x2: the drain over four ranks ---------------------------------------------------------------
if start_server "$WORK/s22slow.log" $(mpirun_n 4) "$SERVE" "$model" --port 0 --tp 2 \
  --debug-step-delay-ms 40; then
  client drain "$port" 2x2 $(rank_pids "$server")
  wait_exit "$server" 30
  [[ $rc -eq 0 ]] && grep -q 'drained and stopped' "$WORK/s22slow.log" \
    && pass "2x2: SIGTERM to the four ranks: drained, mpirun exit 0" \
    || { fail "2x2: drain: exit $rc"; tail -20 "$WORK/s22slow.log"; }
fi

# ---- KV-cache budget: 48 positions of 1024 bytes (2 layers x 2 x 64 channels x 4 bytes) ---------
if start_server "$WORK/skv.log" "$SERVE" "$model" --port 0 --kv-cache-mb 0.046875 \
  --debug-step-delay-ms 20; then
  grep -q "KV-cache budget 48 positions (3 blocks of 16)" "$WORK/skv.log" \
    && pass "kv: ready with a budget of 48 positions in 3 blocks" \
    || fail "kv: the ready line does not give the budget: $(grep ready "$WORK/skv.log")"
  client kv "$port"
  stop_server kv "$WORK/skv.log"
fi
expect_error "--kv-cache-mb -1" "kv-cache-mb -1: key 'serve.kv_cache_mb' = -1.0 must be >= 0" "$SERVE" "$model" --kv-cache-mb -1
expect_error "--max-prefill-tokens -1" "max-prefill-tokens -1: key 'serve.max_prefill_tokens' = -1 must be >= 0; give the prompt tokens one decode step may prefill, or 0" \
  "$SERVE" "$model" --max-prefill-tokens -1
expect_error "--kv-cache-mb too small" 'kv-cache-mb. 0.001 holds 1 token positions at 1024 bytes each .this model at tp 1.; the KV cache is paged in blocks of 16 positions and needs at least one' "$SERVE" "$model" \
  --kv-cache-mb 0.001
finish
