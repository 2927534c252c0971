#!/usr/bin/env bash
# tessera-serve's request features end to end (docs/SERVING.md), on a small model trained here:
#   stop strings: a seeded completion stops before a stop string its full text is known to
#     contain (finish_reason "stop", fewer tokens), streamed and not; no streamed piece holds it;
#   logprobs: a greedy token's log-probability is the largest of its top 5, the tokens join to
#     the text, text_offset counts bytes; values equal a PyTorch reference (scripts/torch_gpt2.py
#     on the same checkpoint, full recomputation, log_softmax in double) within 1e-4; a request
#     alone and among concurrent requests gets the same tokens and logprobs within 1e-5; tp 2
#     gives tp 1's within 1e-5;
#   a client that hangs up during a non-streaming request has it cancelled (the running count
#     drops to 0, cancelled +1) within about a poll interval;
#   chat completions: a seeded chat answer is the completions endpoint's text for the chat
#     template's prompt with the turn stop (same seed), in the chat shape; streamed, the first
#     event carries the role and the pieces join to the answer; logprobs.content tokens join to
#     it; an empty messages list is a 400 naming messages, and a good chat after it succeeds;
#     tp 2 gives tp 1's answers;
#   prefix reuse: a seeded request sent twice reuses all but its last prompt token the second
#     time (/metrics' tessera_prefix_cache_hit_tokens_total), with the same text; a prompt that
#     extends it reuses at least its 20 tokens; the tp 2 server, with --prefix-cache false,
#     reuses nothing and gives the same texts.
# Every wait is bounded; a trap kills any server left behind.
source "$(dirname "$0")/lib.sh"
cd "$TESSERA_ROOT"
PY=/usr/bin/python3
source "$(dirname "$0")/serve_lib.sh"

# stop_server: SIGTERM to every rank; waits (at most 20 s) for the job to end.
stop_server() {
  sigterm_ranks
  wait_exit "$server" 20
}

cat > "$WORK/client.py" << 'PY'
"""Checks of stop, logprobs and hang-ups against tessera-serve; prints ok:/FAIL: lines."""
import json
import math
import os
import socket
import sys
import threading
import time

import serve_client as sc
from serve_client import call, check, fail, metrics, ok

PROMPT_IDS = [10, 20, 30, 40, 50, 60]  # the greedy/torch comparison's prompt, as token ids


def counts(usage):
    """usage without prompt_tokens_details (which depends on what earlier requests left)."""
    return {k: v for k, v in usage.items() if k != "prompt_tokens_details"}


def complete(body, path="/v1/completions"):
    status, _, text = call("POST", path, body)
    return status, json.loads(text)


def stream(body, path="/v1/completions"):
    conn = sc.connect(30)
    conn.request("POST", path, body=json.dumps(dict(body, stream=True)),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    events = []
    while True:
        line = r.readline()
        if not line:
            break
        line = line.decode("utf-8").rstrip("\n")
        if line.startswith("data: "):
            if line[6:] == "[DONE]":
                break
            events.append(json.loads(line[6:]))
    conn.close()
    return events


STOPPED = 'tessera_requests_finished_total{reason="stop"}'
CANCELLED = 'tessera_requests_finished_total{reason="cancelled"}'


def seeded(seed, **extra):
    return dict({"prompt": "ROMEO:", "max_tokens": 40, "temperature": 0.9, "top_k": 40,
                 "seed": seed}, **extra)


def cmd_stop():
    stopped_before = metrics().get(STOPPED, 0)
    # The seeded text without a stop string, then a stop string taken from its middle.
    status, full = complete(seeded(7))
    text = full["choices"][0]["text"]
    stop = None
    for p in range(len(text) // 3, len(text) - 3):
        s = text[p:p + 3]
        if text.find(s) == p and s.strip():
            stop = s
            break
    if not check(status == 200 and stop is not None, "a seeded text with a stop string inside",
                 f"{status} {text!r}"):
        return
    expected = text[:text.find(stop)]
    status, j = complete(seeded(7, stop=["never-appears", stop]))
    c = j["choices"][0]
    check(status == 200 and c["text"] == expected and c["finish_reason"] == "stop"
          and j["usage"]["completion_tokens"] < 40,
          f"stop {stop!r}: the text ends before it, finish_reason stop, "
          f"{j['usage']['completion_tokens']} of 40 tokens",
          f"{status} {c!r}, expected {expected!r}")
    events = stream(seeded(7, stop=stop, stream_options={"include_usage": True}))
    pieces = [e["choices"][0]["text"] for e in events if e.get("choices")]
    finishes = [e["choices"][0]["finish_reason"] for e in events if e.get("choices")]
    usage = [e["usage"] for e in events if "usage" in e]
    check("".join(pieces) == expected and finishes[-1] == "stop"
          and not any(stop in p for p in pieces)
          and usage and usage[0]["completion_tokens"] == j["usage"]["completion_tokens"],
          f"streamed: {len(pieces)} pieces join to the same text, none holds the stop string, "
          "finish_reason stop, the same usage", f"{pieces!r} {finishes[-1]} {usage}")
    status, j = complete(seeded(7, stop=text[:2]))
    check(status == 200 and j["choices"][0]["text"] == "" and j["choices"][0]["finish_reason"]
          == "stop", "a stop string at the very start leaves an empty text", f"{j}")
    # Each request above that hit its stop string left the batch counted as stopped (the steps
    # are slowed, so the stop comes before max_tokens).
    time.sleep(0.3)
    check(metrics().get(STOPPED, 0) - stopped_before == 3, "metrics: 3 requests finished 'stop'",
          f"{metrics().get(STOPPED, 0) - stopped_before}")


def greedy_logprobs(port=None):
    status, j = complete({"prompt": PROMPT_IDS, "max_tokens": 12, "temperature": 0,
                          "logprobs": 5})
    return status, j


def cmd_logprobs(out_json):
    status, j = greedy_logprobs()
    c = j["choices"][0]
    lp = c["logprobs"]
    n = len(lp["tokens"])
    ok_shape = (status == 200 and n == 12 and len(lp["token_logprobs"]) == n
                and len(lp["top_logprobs"]) == n and len(lp["text_offset"]) == n)
    if not check(ok_shape, "greedy logprobs=5: 12 tokens, token_logprobs, top_logprobs, "
                 "text_offset", f"{status} {j}"):
        return
    best = all(math.isclose(lp["token_logprobs"][i], max(lp["top_logprobs"][i].values()),
                            rel_tol=0, abs_tol=0) for i in range(n))
    check(best, "each greedy token's log-probability is the largest of its top 5",
          f"{lp['token_logprobs']} vs {lp['top_logprobs']}")
    mass = all(sum(math.exp(v) for v in t.values()) <= 1 + 1e-6 for t in lp["top_logprobs"])
    negative = all(v <= 0 for v in lp["token_logprobs"])
    check(mass and negative, "log-probabilities are <= 0 and a top 5 holds mass <= 1")
    offsets, at = [], 0
    for t in lp["tokens"]:
        offsets.append(at)
        at += len(t.encode("utf-8"))
    check("".join(lp["tokens"]) == c["text"] and lp["text_offset"] == offsets,
          "the tokens join to the text; text_offset counts the bytes before each",
          f"{lp['tokens']} {lp['text_offset']}")
    status, j0 = complete({"prompt": PROMPT_IDS, "max_tokens": 12, "temperature": 0,
                           "logprobs": 0})
    check(j0["choices"][0]["logprobs"]["top_logprobs"] is None
          and j0["choices"][0]["logprobs"]["token_logprobs"] == lp["token_logprobs"],
          "logprobs=0: the same values, top_logprobs null")
    status, jn = complete({"prompt": PROMPT_IDS, "max_tokens": 3})
    check(jn["choices"][0]["logprobs"] is None, "no logprobs asked: logprobs null")
    with open(out_json, "w") as f:
        json.dump(lp, f)

    # Alone and among 4 concurrent requests: identical logprobs (seeded sampling, logprobs=2).
    bodies = [seeded(100 + i, logprobs=2, max_tokens=20) for i in range(4)]
    alone = [complete(b)[1]["choices"][0] for b in bodies]
    together = [None] * 4

    def run(i):
        together[i] = complete(bodies[i])[1]["choices"][0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Exactly: a row's logits in a batch are the bits it gets alone (while serving, every
    # matmul row runs in one fixed order; batched_decode_test.cpp), so the logprobs are too.
    same = all(together[i] is not None and together[i] == alone[i] for i in range(4))
    check(same, "4 concurrent seeded requests: the text, tokens and logprobs of each alone, "
          "bit for bit")
    events = stream(bodies[0])
    streamed = [t for e in events if e.get("choices") and e["choices"][0]["logprobs"]
                for t in e["choices"][0]["logprobs"]["token_logprobs"]]
    check(streamed == alone[0]["logprobs"]["token_logprobs"],
          "streamed: the events' logprobs join to the non-streaming ones")


def cmd_compare(tp1_json):
    """tp 2's greedy logprobs against tp 1's (same tokens, values within 1e-5)."""
    status, j = greedy_logprobs()
    lp = j["choices"][0]["logprobs"]
    with open(tp1_json) as f:
        ref = json.load(f)
    diff = max(abs(a - b) for a, b in zip(lp["token_logprobs"], ref["token_logprobs"]))
    check(lp["tokens"] == ref["tokens"] and diff <= 1e-5,
          f"tp 2: the greedy tokens and logprobs of tp 1 (max difference {diff:.2e})",
          f"{lp['tokens']} vs {ref['tokens']}")


def cmd_hangup():
    before = metrics()
    s = socket.create_connection(("127.0.0.1", sc.PORT), timeout=10)
    body = json.dumps({"prompt": "ROMEO:", "max_tokens": 50})
    s.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
    deadline = time.time() + 10
    while metrics()["tessera_requests_running"] < 1 and time.time() < deadline:
        time.sleep(0.02)
    check(metrics()["tessera_requests_running"] == 1, "a non-streaming request is running")
    s.close()
    t0 = time.time()
    while metrics()["tessera_requests_running"] > 0 and time.time() - t0 < 5:
        time.sleep(0.02)
    waited = time.time() - t0
    m = metrics()
    check(m["tessera_requests_running"] == 0 and m[CANCELLED] == before[CANCELLED] + 1
          and waited < 1.0,
          f"the client hung up: cancelled, running 0 after {waited:.2f} s (50 tokens at 20 ms "
          "would take 1 s)", f"running {m['tessera_requests_running']}, cancelled "
          f"{m[CANCELLED] - before[CANCELLED]}")
    status, j = complete({"prompt": "ROMEO:", "max_tokens": 3})
    check(status == 200, "a request after the hang-up succeeds")


CHAT = "/v1/chat/completions"
# Short: the test model's context is 64 tokens.
MESSAGES = [{"role": "system", "content": "A"}, {"role": "user", "content": "RO"},
            {"role": "assistant", "content": "Hi"}, {"role": "user", "content": "JU"}]
TEMPLATE = "A\n\nUser: RO\nAssistant: Hi\nUser: JU\nAssistant:"


def cmd_chat(out_json, ref_json=""):
    """Chat answers against the completions endpoint; writes them to out_json, or compares
    them with ref_json's (tp 2 against tp 1)."""
    answers = {}
    for seed in (3, 4):
        body = {"max_tokens": 16, "temperature": 0.9, "top_k": 40, "seed": seed}
        status, j = complete(dict(body, messages=MESSAGES), CHAT)
        s2, plain = complete(dict(body, prompt=TEMPLATE, stop=["\nUser:"]))
        if not check(status == 200 and s2 == 200, f"chat seed {seed}: 200", f"{status} {j}"):
            return
        c, p = j["choices"][0], plain["choices"][0]
        answers[seed] = c["message"]["content"]
        check(j["object"] == "chat.completion" and j["id"].startswith("chatcmpl-")
              and c["message"]["role"] == "assistant" and c["message"]["content"] == p["text"]
              and c["finish_reason"] == p["finish_reason"] and counts(j["usage"]) == counts(plain["usage"]),
              f"chat seed {seed}: the completions text of the template prompt with the turn stop "
              f"({j['usage']['completion_tokens']} tokens, finish {c['finish_reason']})",
              f"{j} vs {plain}")
        events = stream(dict(body, messages=MESSAGES, stream_options={"include_usage": True}),
                        CHAT)
        chunks = [e for e in events if e.get("choices")]
        pieces = "".join(e["choices"][0]["delta"].get("content", "") for e in chunks)
        usage = [e["usage"] for e in events if e.get("usage")]
        check(chunks and chunks[0]["choices"][0]["delta"].get("role") == "assistant"
              and all(e["object"] == "chat.completion.chunk" for e in events)
              and all("role" not in e["choices"][0]["delta"] for e in chunks[1:])
              and pieces == answers[seed]
              and chunks[-1]["choices"][0]["finish_reason"] == c["finish_reason"]
              and [counts(u) for u in usage] == [counts(j["usage"])],
              f"chat seed {seed} streamed: the role first, {len(chunks)} chunks join to the "
              "answer, the same finish and usage", f"{events}")
    status, j = complete({"messages": [{"role": "user", "content": "ROMEO:"}], "max_tokens": 8,
                          "temperature": 0, "logprobs": True, "top_logprobs": 2}, CHAT)
    lp = j["choices"][0]["logprobs"]["content"] if status == 200 else []
    check(status == 200 and "".join(t["token"] for t in lp) == j["choices"][0]["message"]["content"]
          and all(len(t["top_logprobs"]) == 2 and t["logprob"] <= 0 for t in lp),
          f"chat logprobs: {len(lp)} tokens join to the answer, 2 alternatives each", f"{j}")
    status, j = complete({"messages": []}, CHAT)
    check(status == 400 and j["error"]["param"] == "messages"
          and "messages is empty" in j["error"]["message"],
          "chat: an empty messages list is a 400 naming messages", f"{status} {j}")
    status, _ = complete({"messages": [{"role": "user", "content": "a"}], "max_tokens": 2}, CHAT)
    check(status == 200, "a good chat after the bad one succeeds")
    if ref_json:
        with open(ref_json) as f:
            ref = {int(k): v for k, v in json.load(f).items()}
        check(ref == answers, "tp 2: the seeded chat answers of tp 1", f"{answers} vs {ref}")
    else:
        with open(out_json, "w") as f:
            json.dump(answers, f)


HIT = "tessera_prefix_cache_hit_tokens_total"
PREFIX = list(range(10, 30))  # 20 token ids


def cmd_prefix(out_json, ref_json=""):
    """Prefix reuse (1x1, on) or none (1x2, --prefix-cache false), the texts compared."""
    body = {"max_tokens": 12, "temperature": 0.9, "top_k": 40, "seed": 21}
    before = metrics().get(HIT, 0)
    texts = {}
    for name, prompt in (("first", PREFIX), ("again", PREFIX), ("longer", PREFIX + [5, 6, 7])):
        status, j = complete(dict(body, prompt=prompt))
        if not check(status == 200, f"prefix: {name}: 200", f"{status} {j}"):
            return
        texts[name] = j["choices"][0]["text"]
        texts[name + "_cached"] = j["usage"]["prompt_tokens_details"]["cached_tokens"]
        time.sleep(0.1)  # the metric is taken after the next apply()
        texts[name + "_hits"] = metrics().get(HIT, 0) - before
        before += texts[name + "_hits"]
    if ref_json:
        with open(ref_json) as f:
            ref = json.load(f)
        check(all(texts[k + "_hits"] == 0 and texts[k + "_cached"] == 0
                  for k in ("first", "again", "longer")),
              "--prefix-cache false: no prompt token reused", f"{texts}")
        check(all(texts[k] == ref[k] for k in ("first", "again", "longer")),
              "without prefix reuse (tp 2): the texts of tp 1 with it", f"{texts} vs {ref}")
        return
    check(texts["again"] == texts["first"] and texts["again_hits"] == len(PREFIX) - 1
          and texts["again_cached"] == len(PREFIX) - 1,
          f"the same request again reuses {texts['again_hits']} of {len(PREFIX)} prompt tokens "
          "(all but the last; usage.prompt_tokens_details.cached_tokens says "
          f"{texts['again_cached']}) and gives the same text", f"{texts}")
    check(texts["longer_hits"] >= len(PREFIX) and texts["longer_cached"] == texts["longer_hits"],
          f"a prompt extending it reuses {texts['longer_hits']} tokens (>= {len(PREFIX)})",
          f"{texts}")
    with open(out_json, "w") as f:
        json.dump(texts, f)


if __name__ == "__main__":
    sc.main({"stop": cmd_stop, "logprobs": cmd_logprobs, "compare": cmd_compare,
             "hangup": cmd_hangup, "chat": cmd_chat, "prefix": cmd_prefix})
PY

# The PyTorch reference: greedy decoding by full recomputation on the exported checkpoint; the
# chosen token's log-probability and the top 5 from log_softmax in double.
cat > "$WORK/torch_ref.py" << 'PY'
import json
import sys

import torch

sys.path.insert(0, sys.argv[1] + "/scripts")
from check_torch_export import build_model  # noqa: E402

model = build_model(sys.argv[2])
with open(sys.argv[3]) as f:
    served = json.load(f)
tokens = [10, 20, 30, 40, 50, 60]
worst, mismatch = 0.0, None
with torch.no_grad():
    for i, want in enumerate(served["token_logprobs"]):
        logits, _ = model(torch.tensor([tokens]))
        lp = torch.log_softmax(logits[0, -1].double(), dim=-1)
        top = torch.topk(lp, 5).values.tolist()
        chosen = int(torch.argmax(lp))
        worst = max(worst, abs(lp[chosen].item() - want))
        tops = sorted(served["top_logprobs"][i].values(), reverse=True)
        # top_logprobs is keyed by token text: equal texts collapse, so compare what is there.
        for v in tops:
            worst = max(worst, min(abs(v - t) for t in top))
        tokens.append(chosen)
print(f"{worst:.3e}")
sys.exit(0 if worst <= 1e-4 else 1)
PY

make_small_data "$WORK/data"
sets=$(small_sets "$WORK/data")
timeout 120 "$TESSERA_BIN/tessera-train" configs/tiny.yaml $sets --set train.steps=60 \
  --set optim.warmup_steps=5 > "$WORK/train.log" 2>&1 \
  || { cat "$WORK/train.log"; fail "training run"; finish; exit 1; }
model="$WORK/run/model.h5"

# Slowed steps (20 ms) so that a stop string or a hang-up is seen before max_tokens is reached.
if start_server "$WORK/serve1.log" "$SERVE" "$model" --port 0 --max-sequences 4 \
  --debug-step-delay-ms 20; then
  pass "1x1 ready on port $port"
  client stop "$port"
  client logprobs "$port" "$WORK/tp1.json"
  client hangup "$port"
  client chat "$port" "$WORK/chat1.json"
  client prefix "$port" "$WORK/prefix1.json"
  stop_server
fi

if [[ -s "$WORK/tp1.json" ]]; then
  if out=$(timeout 60 $PY scripts/ckpt_to_torch.py "$model" "$WORK/ref.pt" 2>&1); then
    out=$(timeout 60 $PY "$WORK/torch_ref.py" "$TESSERA_ROOT" "$WORK/ref.pt" "$WORK/tp1.json" 2>&1) \
      && pass "greedy logprobs and top 5 equal PyTorch's log_softmax (max difference $out)" \
      || fail "logprobs vs PyTorch: $out"
  else
    fail "ckpt_to_torch.py: $out"
  fi

  if start_server "$WORK/serve2.log" mpirun -n 2 --oversubscribe --bind-to none "$SERVE" \
    "$model" --port 0 --tp 2 --prefix-cache false; then
    pass "1x2 ready on port $port"
    client compare "$port" "$WORK/tp1.json"
    client chat "$port" "$WORK/chat2.json" "$WORK/chat1.json"
    client prefix "$port" "$WORK/prefix2.json" "$WORK/prefix1.json"
    stop_server
  fi
else
  fail "no tp 1 logprobs to compare with"
fi
finish
