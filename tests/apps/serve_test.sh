#!/usr/bin/env bash
# tessera-serve end to end on a small model trained here (docs/SERVING.md): at 1 x 1 and under
# mpirun at 1 x 2 (tp 2), on port 0 (the server prints the port it got). Checks: /health,
# /v1/models, non-streaming and streaming completions (same text), greedy and seeded text equal
# tessera-generate's, 8 concurrent seeded requests give the texts each gives alone, tp 2 gives
# the texts of tp 1, 429 with Retry-After beyond --max-queue, a client that hangs up mid-stream
# cancels its sequence, bad input answers 400 naming the field while good requests still work,
# /metrics in Prometheus format, SIGTERM drains (503 for new work, running requests finish) and
# every rank exits 0; a --tp that does not divide the ranks is refused on every rank (dp > 1:
# serve_dp_test.sh). Every wait is bounded; a trap kills any server left behind, so the test
# cannot hang.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
SERVER_LIMIT_S=150
source "$(dirname "$0")/serve_lib.sh"
MPIRUN=(mpirun -n 2 --oversubscribe --bind-to none)

cat > "$WORK/client.py" <<'PY'
"""HTTP checks of tessera-serve, one per command; prints ok:/FAIL: lines."""
import json
import os
import signal
import socket
import subprocess
import threading
import time

import serve_client as sc
from serve_client import call, check, fail, ok


def complete(body):
    status, headers, text = call("POST", "/v1/completions", body)
    try:
        return status, headers, json.loads(text)
    except ValueError:
        return status, headers, {"unparsed": text}


def stream(body, hang_up_after=None):
    """The data: payloads of a streamed completion (JSON dicts, then the string "[DONE]").
    hang_up_after=n: close the connection after n events (a client going away)."""
    conn = sc.connect(30)
    conn.request("POST", "/v1/completions", body=json.dumps(dict(body, stream=True)),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    ctype = r.getheader("Content-Type", "")
    events = []
    while True:
        line = r.readline()
        if not line:
            break
        line = line.decode("utf-8").rstrip("\n")
        if not line.startswith("data: "):
            continue
        payload = line[6:]
        events.append("[DONE]" if payload == "[DONE]" else json.loads(payload))
        if payload == "[DONE]":
            break
        if hang_up_after is not None and len(events) >= hang_up_after:
            conn.sock.shutdown(socket.SHUT_RDWR)
            break
    conn.close()
    return r.status, ctype, events


def stream_text(events):
    return "".join(e["choices"][0]["text"] for e in events if isinstance(e, dict) and e.get("choices"))


def metrics():
    status, _, text = call("GET", "/metrics")
    return status, text, sc.parse_metrics(text)


def seeded(i):
    return {"prompt": "ROMEO:", "max_tokens": 40, "temperature": 0.9, "top_k": 40, "seed": 100 + i}


def concurrently(bodies):
    return sc.concurrently(complete, bodies)


def generate(gen, model, *args):
    out = subprocess.run([gen, model, "--prompt", "ROMEO:", "--max-tokens", "30", *args],
                         capture_output=True, timeout=60)
    text = out.stdout.decode("utf-8", "replace")
    assert text.startswith("ROMEO:") and text.endswith("\n"), text
    return text[len("ROMEO:"):-1]


def bad_inputs(tag):
    cases = [
        ("malformed JSON", '{"prompt": "ROMEO:",', 400, None, "not valid JSON"),
        ("max_tokens of the wrong type", {"prompt": "a", "max_tokens": "5"}, 400, "max_tokens",
         "must be an integer, not a string"),
        ("unknown field", {"prompt": "a", "max_tokenz": 5}, 400, "max_tokenz", "unknown field"),
        ("empty prompt", {"prompt": ""}, 400, "prompt", "empty"),
        ("prompt + max_tokens over the context", {"prompt": "ROMEO:", "max_tokens": 64}, 400,
         "max_tokens", "over the model's context of 64"),
        ("negative temperature", {"prompt": "a", "temperature": -1}, 400, "temperature", ">= 0"),
        ("top_p 0", {"prompt": "a", "top_p": 0}, 400, "top_p", "0 < top_p <= 1"),
        ("top_p 1.5", {"prompt": "a", "top_p": 1.5}, 400, "top_p", "top_p 1.5 is out of range"),
        ("negative top_k", {"prompt": "a", "top_k": -1}, 400, "top_k", ">= 0"),
        ("token id past the vocabulary", {"prompt": [1, 512]}, 400, "prompt",
         "outside the vocabulary [0, 512)"),
        ("a model not served", {"prompt": "a", "model": "gpt-4"}, 404, "model", "is not served"),
    ]
    for name, body, status, param, says in cases:
        got, _, j = complete(body)
        err = j.get("error", {})
        check(got == status and err.get("param") == param and says in err.get("message", "")
              and err.get("type") == "invalid_request_error",
              f"{tag}: {name}: {got} ({err.get('message')})",
              f"expected {status} param {param} saying '{says}', got {got} {j}")
    got, _, j = complete({"prompt": "ROMEO:", "max_tokens": 5, "seed": 1})
    check(got == 200 and j["usage"]["completion_tokens"] >= 1,
          f"{tag}: a good request after the bad ones succeeds", f"{got} {j}")
    return len(cases)


def cmd_basic(model_name, gen, model, save):
    status, _, text = call("GET", "/health")
    check(status == 200 and json.loads(text)["status"] == "ok", "/health: 200 ok", f"{status} {text}")
    status, _, text = call("GET", "/v1/models")
    j = json.loads(text)
    check(status == 200 and j["data"][0]["id"] == model_name and j["data"][0]["max_model_len"] == 64,
          f"/v1/models lists {model_name} (context 64)", text)

    greedy = {"prompt": "ROMEO:", "max_tokens": 30, "temperature": 0}
    status, _, j = complete(greedy)
    u = j.get("usage", {})
    check(status == 200 and j["object"] == "text_completion" and
          j["choices"][0]["finish_reason"] in ("length", "stop") and
          u["prompt_tokens"] > 0 and 0 < u["completion_tokens"] <= 30 and
          u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"],
          f"non-streaming completion: {u}, finish {j['choices'][0]['finish_reason']}", str(j))
    text = j["choices"][0]["text"]
    expected = generate(gen, model, "--greedy")
    check(text == expected, "greedy text equals tessera-generate --greedy",
          f"{text!r} vs {expected!r}")
    sampled = {"prompt": "ROMEO:", "max_tokens": 30, "temperature": 0.9, "top_k": 20, "seed": 5}
    _, _, js = complete(sampled)
    expected = generate(gen, model, "--temperature", "0.9", "--top-k", "20", "--seed", "5")
    check(js["choices"][0]["text"] == expected and len(expected) > 10,
          "seeded sampled text equals tessera-generate --seed 5",
          f"{js['choices'][0]['text']!r} vs {expected!r}")

    status, ctype, events = stream(dict(greedy, stream_options={"include_usage": True}))
    check(status == 200 and ctype.startswith("text/event-stream"), "stream: 200 text/event-stream",
          f"{status} {ctype}")
    check(events and events[-1] == "[DONE]", "stream ends with data: [DONE]", str(events[-2:]))
    chunks = [e for e in events if isinstance(e, dict) and e["choices"]]
    check(stream_text(events) == text and len(chunks) >= 2,
          f"streamed text ({len(chunks)} events) equals the non-streaming text",
          f"{stream_text(events)!r} vs {text!r}")
    check(all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1]) and
          chunks[-1]["choices"][0]["finish_reason"] == j["choices"][0]["finish_reason"],
          "stream: finish_reason only on the last chunk")
    usage = [e for e in events if isinstance(e, dict) and not e["choices"]]
    # The counts, not prompt_tokens_details: the streamed request reuses the first one's prompt.
    check(len(usage) == 1 and all(usage[0]["usage"][k] == u[k] for k in
                                  ("prompt_tokens", "completion_tokens", "total_tokens")),
          "stream_options.include_usage: usage event")

    alone = []
    for i in range(8):
        _, _, r = complete(seeded(i))
        alone.append(r["choices"][0]["text"])
    together = concurrently([seeded(i) for i in range(8)])
    texts = [r[2]["choices"][0]["text"] if r and r[0] == 200 else None for r in together]
    check(texts == alone and len(set(alone)) > 1,
          "8 concurrent seeded requests give the texts each gives alone",
          f"{texts} vs {alone}")
    with open(save, "w") as f:
        json.dump({"greedy": text, "seeded": alone}, f)

    n_bad = bad_inputs("1x1")
    status, _, text = call("POST", "/v1/completions", '{"prompt": "' + "a" * (1 << 20) + '"}')
    check(status == 413 and "too large" in text, "a body over 1 MiB: 413 JSON error", f"{status} {text}")
    status, prom, m = metrics()
    check(status == 200 and "# TYPE tessera_time_to_first_token_seconds histogram" in prom,
          "/metrics: Prometheus text with the TTFT histogram")
    finished = 1 + 1 + 1 + 8 + 8 + 1  # greedy, sampled, stream, alone, together, good
    check(m.get("tessera_requests_running") == 0 and m.get("tessera_requests_waiting") == 0,
          "/metrics: nothing running or waiting")
    check(m.get('tessera_requests_finished_total{reason="length"}', 0) +
          m.get('tessera_requests_finished_total{reason="stop"}', 0) == finished and
          m.get("tessera_time_to_first_token_seconds_count") == finished and
          m.get("tessera_e2e_request_latency_seconds_count") == finished,
          f"/metrics: {finished} requests finished, each with TTFT and latency", prom)
    check(m.get('tessera_requests_rejected_total{reason="invalid"}') == n_bad,
          f"/metrics: {n_bad} invalid requests counted")
    check(m.get("tessera_generation_tokens_total", 0) > 100 and
          m.get("tessera_prompt_tokens_total", 0) >= finished,
          f"/metrics: {m.get('tessera_generation_tokens_total')} tokens generated")


def cmd_queue():
    # One slot, a queue of one, 40 ms per step (1.2 s a request): of 6 requests at once, exactly
    # 2 fit, whichever comes first, the serving loop or the other requests: one takes the free
    # slot (a request bound for a free slot does not count as queued), one queues behind it.
    # Every other one is a 429.
    body = {"prompt": "ROMEO:", "max_tokens": 30, "temperature": 0}
    results = concurrently([body] * 6)
    codes = sorted(r[0] for r in results)
    busy = [r for r in results if r[0] == 429]
    check(codes.count(200) == 2 and len(busy) == 4, f"queue bound: {codes}", str(results))
    if busy:
        s, h, j = busy[0]
        check(h.get("retry-after") == "1" and j["error"]["code"] == "queue_full" and
              "--max-queue 1" in j["error"]["message"],
              f"429 says: {j['error']['message']} (Retry-After {h.get('retry-after')})", str(busy[0]))
    texts = {r[2]["choices"][0]["text"] for r in results if r[0] == 200}
    check(len(texts) == 1, "the admitted requests all give the greedy text")
    _, _, m = metrics()
    check(m.get('tessera_requests_rejected_total{reason="queue_full"}') == len(busy),
          "/metrics counts the 429s")

    # A streaming client that hangs up after 2 events: its sequence is cancelled.
    status, _, events = stream({"prompt": "ROMEO:", "max_tokens": 50, "temperature": 0.9,
                                "seed": 3}, hang_up_after=2)
    check(status == 200 and len(events) == 2, "stream read 2 events, then the client hung up")
    for _ in range(100):
        _, _, m = metrics()
        if m.get('tessera_requests_finished_total{reason="cancelled"}') == 1:
            break
        time.sleep(0.05)
    check(m.get('tessera_requests_finished_total{reason="cancelled"}') == 1 and
          m.get("tessera_requests_running") == 0,
          "hung-up stream cancelled (requests_finished_total{reason=cancelled} 1, none running)",
          str({k: v for k, v in m.items() if "finished" in k or "running" in k}))
    status, _, j = complete({"prompt": "ROMEO:", "max_tokens": 3})
    check(status == 200, "the server still serves after the hang-up")


def cmd_drain(*pids):
    # A long request in flight, then SIGTERM: /health 503, new requests 503, the running one
    # finishes in full.
    box = {}

    def run():
        box["r"] = complete({"prompt": "ROMEO:", "max_tokens": 40, "temperature": 0.9, "seed": 9})

    t = threading.Thread(target=run)
    t.start()
    for _ in range(200):  # until it is in the decode batch
        _, _, m = metrics()
        if m.get("tessera_requests_running", 0) >= 1:
            break
        time.sleep(0.01)
    for pid in pids:
        os.kill(int(pid), signal.SIGTERM)
    time.sleep(0.3)
    try:
        status, _, text = call("GET", "/health", timeout=5)
        check(status == 503 and json.loads(text)["status"] == "draining",
              "draining: /health answers 503", f"{status} {text}")
        status, headers, j = complete({"prompt": "a", "max_tokens": 2})
        check(status == 503 and headers.get("retry-after") == "1",
              "draining: a new request gets 503 with Retry-After", f"{status} {j}")
    except OSError as e:
        fail(f"draining: the server stopped answering before its request finished: {e}")
    t.join(30)
    status, _, j = box.get("r", (None, None, {}))
    check(status == 200 and j["usage"]["completion_tokens"] == 40 and
          j["choices"][0]["finish_reason"] == "length",
          "draining: the request in flight finished all 40 tokens", f"{status} {j}")


def cmd_tp(expected_file):
    expected = json.load(open(expected_file))
    status, _, text = call("GET", "/health")
    check(status == 200, "tp 2: /health 200")
    _, _, j = complete({"prompt": "ROMEO:", "max_tokens": 30, "temperature": 0})
    check(j["choices"][0]["text"] == expected["greedy"], "tp 2: greedy text equals tp 1's",
          f"{j['choices'][0]['text']!r} vs {expected['greedy']!r}")
    together = concurrently([seeded(i) for i in range(8)])
    texts = [r[2]["choices"][0]["text"] if r and r[0] == 200 else None for r in together]
    check(texts == expected["seeded"], "tp 2: 8 concurrent seeded requests give tp 1's texts",
          f"{texts} vs {expected['seeded']}")
    status, ctype, events = stream(seeded(3))
    check(stream_text(events) == expected["seeded"][3] and events[-1] == "[DONE]",
          "tp 2: streamed seeded text equals tp 1's")
    bad_inputs("tp 2")


if __name__ == "__main__":
    sc.main({"basic": cmd_basic, "queue": cmd_queue, "drain": cmd_drain, "tp": cmd_tp})
PY

# ---- A small model ------------------------------------------------------------------------------
make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")
timeout 120 "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set train.steps=60 \
  --set optim.warmup_steps=5 > "$WORK/train.log" 2>&1 \
  || { cat "$WORK/train.log"; fail "training run"; finish; exit 1; }
model="$WORK/run/model.h5"

# ---- 1 x 1: the API, determinism, bad input, metrics, SIGTERM -----------------------------------
if start_server "$WORK/serve1.log" "$SERVE" "$model" --port 0 --model-name tiny; then
  pass "1x1 ready on port $port"
  client basic "$port" tiny "$TESSERA_BIN/tessera-generate" "$model" "$WORK/tp1.json"
  kill -TERM $(rank_pids "$server")
  wait_exit "$server" 20
  [[ $rc -eq 0 ]] && grep -q 'drained and stopped' "$WORK/serve1.log" \
    && pass "1x1: SIGTERM when idle: exit 0 ($(tail -1 "$WORK/serve1.log"))" \
    || { fail "1x1: SIGTERM: exit $rc"; tail -5 "$WORK/serve1.log"; }
fi

# ---- 1 x 1, one slot, a queue of one, slow steps: 429, hang-up, draining with work in flight ----
# The options come from a config file (one slot, a queue of 5, port 8000, no prefix cache), --set
# (port 0) and a flag (--max-queue 1), which wins: the ready line and the exact 429 count show
# all three.
printf 'serve:\n  max_sequences: 1\n  max_queue: 5\n  port: 8000\n  prefix_cache: false\n' \
  > "$WORK/serve.yaml"
if start_server "$WORK/serve_slow.log" "$SERVE" "$model" --config "$WORK/serve.yaml" \
  --set serve.port=0 --max-queue 1 --debug-step-delay-ms 40; then
  grep -q 'max sequences 1, max queue 1, prefill 128 tokens a step, prefix cache off)' \
    "$WORK/serve_slow.log" \
    && pass "1x1: --config, --set and a flag combine (flag wins)" \
    || fail "1x1: config precedence: $(grep ready "$WORK/serve_slow.log")"
  client queue "$port"
  client drain "$port" $(rank_pids "$server")
  wait_exit "$server" 30
  [[ $rc -eq 0 ]] && grep -q 'draining (signal 15)' "$WORK/serve_slow.log" \
    && pass "1x1: SIGTERM with a request in flight: drained, exit 0" \
    || { fail "1x1: drain: exit $rc"; tail -5 "$WORK/serve_slow.log"; }
fi

# ---- 1 x 2 (tp 2): the same texts as tp 1; SIGTERM to every rank drains, all exit 0 -------------
if start_server "$WORK/serve2.log" "${MPIRUN[@]}" "$SERVE" "$model" --port 0 --tp 2 \
  --debug-step-delay-ms 10; then
  pass "1x2 ready on port $port"
  if [[ -s "$WORK/tp1.json" ]]; then
    client tp "$port" "$WORK/tp1.json"
  else
    fail "tp 2: no tp 1 texts to compare with"
  fi
  client drain "$port" $(rank_pids "$server")
  wait_exit "$server" 30
  [[ $rc -eq 0 ]] && grep -q 'drained and stopped' "$WORK/serve2.log" \
    && pass "1x2: SIGTERM to both ranks: drained, mpirun exit 0 (every rank exited 0)" \
    || { fail "1x2: drain: mpirun exit $rc"; tail -20 "$WORK/serve2.log"; }
fi

# ---- A grid tp does not divide is refused, on every rank, before anything loads ----------------
# (dp > 1 replicas: tests/apps/serve_dp_test.sh.)
out=$(timeout -k 5 60 "${MPIRUN[@]}" "$SERVE" "$model" --port 0 --tp 3 2>&1)
rc=$?
n=$(grep -c -- '--tp 3 does not divide' <<< "$out")
# Every rank refuses; the first to end may end the other before it prints its line.
[[ $rc -ne 0 && $rc -ne 124 && $n -ge 1 ]] \
  && pass "--tp 3 on 2 ranks refused (exit $rc): $(grep -m1 'does not divide' <<< "$out")" \
  || { fail "--tp 3 on 2 ranks: exit $rc, $n rank messages:"; sed 's/^/    /' <<< "$out" | head -20; }

# ---- Bad command lines ----------------------------------------------------------------------------
expect_error "--max-queue 0" 'max-queue 0' "$SERVE" "$model" --max-queue 0
expect_error "missing checkpoint" 'nope\.h5' "$SERVE" "$WORK/nope.h5" --port 0
finish
