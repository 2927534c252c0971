#!/usr/bin/python3
"""Load generator for tessera-serve (or any OpenAI-compatible /v1/completions server), in the
manner of vLLM's benchmark_serving: streamed requests, either at a fixed concurrency (N clients,
each sending its next request when the last one ends) or with Poisson arrivals at a set rate
(exponential gaps, seeded). Standard library only (threads + http.client).

  /usr/bin/python3 bench/serve_load.py --port 8000 --concurrency 16 --requests 32
  /usr/bin/python3 bench/serve_load.py --port 8000 --rate 1.5 --requests 24 --json out.json
  /usr/bin/python3 bench/serve_load.py --port 8000 --concurrency 4 --requests 4 \
      --long-prompt-len 896 --long-at 2

Each request: prompt = --prompt-len token ids (7 i + 11 + request + --index-offset) mod --vocab
(the request term left out of the first --shared-prefix-len), max_tokens
--max-tokens, greedy unless --temperature, stream with usage. Measured per request, from the
moment it is sent:
  TTFT  time to the first streamed text;
  TPOT  (end-to-end - TTFT) / (output tokens - 1), the mean time per output token after the first;
  ITL   each gap between successive streamed events (one token each, unless a piece was held back);
  E2E   time to the last event.
Reported: completed and failed requests, duration (first send to last finish), request
throughput, output tokens/s (usage.completion_tokens summed / duration), and mean, p50, p99 and
max of TTFT, TPOT, ITL and E2E in milliseconds.
--long-prompt-len L adds one more request, sent --long-at seconds after the start, with an L-token
prompt and --long-max-tokens: how a long prompt's prefill stalls the streams already decoding.
It is reported apart ("long": its TTFT and E2E) and left out of the figures above, and "stall_ms"
is the longest gap between two events of one of the other streams that overlaps the long
request's wait for its first token. One JSON object on stdout (--json also writes it), a
human summary on stderr.
"""

import argparse
import http.client
import json
import random
import statistics
import sys
import threading
import time


def percentile(values, q):
    """The q-th percentile (0..100) by linear interpolation between order statistics."""
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def summary(values):
    if not values:
        return {"mean": None, "p50": None, "p99": None, "max": None}
    return {"mean": round(statistics.fmean(values) * 1e3, 2),
            "p50": round(percentile(values, 50) * 1e3, 2),
            "p99": round(percentile(values, 99) * 1e3, 2),
            "max": round(max(values) * 1e3, 2)}


def one_request(args, index, prompt_len=None, max_tokens=None):
    """Sends request `index`; returns a dict of its timings (or its error)."""
    prompt_len = args.prompt_len if prompt_len is None else prompt_len
    max_tokens = args.max_tokens if max_tokens is None else max_tokens
    # The first --shared-prefix-len ids are the same in every request (a system prompt).
    salt = index + args.index_offset
    prompt = [(7 * i + 11 + (salt if i >= args.shared_prefix_len else 0)) % args.vocab
              for i in range(prompt_len)]
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": args.temperature,
            "stream": True, "stream_options": {"include_usage": True}}
    if args.model:
        body["model"] = args.model
    result = {"index": index, "ok": False, "events": []}
    t0 = time.perf_counter()
    result["start"] = t0
    try:
        conn = http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
        conn.request("POST", "/v1/completions", body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            result["error"] = f"HTTP {r.status}: {r.read()[:200]!r}"
            return result
        while True:
            line = r.readline()
            if not line:
                break
            if not line.startswith(b"data: "):
                continue
            payload = line[6:].strip()
            if payload == b"[DONE]":
                break
            event = json.loads(payload)
            if "error" in event:
                result["error"] = event["error"].get("message")
                return result
            if event.get("usage"):
                result["output_tokens"] = event["usage"]["completion_tokens"]
            if event.get("choices"):
                result["events"].append(time.perf_counter() - t0)
        conn.close()
        result["ok"] = "output_tokens" in result and bool(result["events"])
        if not result["ok"]:
            result["error"] = "the stream ended without text or usage"
    except (OSError, http.client.HTTPException, ValueError) as e:
        result["error"] = f"{type(e).__name__}: {e}"
    result["end"] = time.perf_counter()
    return result


def run(args):
    results = [None] * args.requests
    lock = threading.Lock()
    next_index = [0]

    def worker():
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= args.requests:
                return
            results[i] = one_request(args, i)

    start = time.perf_counter()
    long_result = [None]
    long_thread = None
    if args.long_prompt_len:
        def send_long():
            delay = start + args.long_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            long_result[0] = one_request(args, args.requests, args.long_prompt_len,
                                         args.long_max_tokens)

        long_thread = threading.Thread(target=send_long)
        long_thread.start()
    if args.rate:
        rng = random.Random(args.seed)
        at, threads = 0.0, []
        for i in range(args.requests):
            delay = start + at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

            def fire(i=i):
                results[i] = one_request(args, i)

            t = threading.Thread(target=fire)
            t.start()
            threads.append(t)
            at += rng.expovariate(args.rate)
    else:
        threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
        for t in threads:
            t.start()
    for t in threads:
        t.join()
    if long_thread:
        long_thread.join()
    return results, long_result[0]


def stall(good, long):
    """The longest gap between successive events of one request of `good` that overlaps the
    window from the long request's send to its first event (None without one)."""
    if not long or not long["ok"]:
        return None
    lo, hi = long["start"], long["start"] + long["events"][0]
    gaps = [b - a for r in good
            for a, b in zip([r["start"] + e for e in r["events"]],
                            [r["start"] + e for e in r["events"][1:]])
            if a < hi and b > lo]
    return round(max(gaps) * 1e3, 2) if gaps else None


def report(args, results, long=None):
    good = [r for r in results if r and r["ok"]]
    failed = [r for r in results if not r or not r["ok"]]
    ttft = [r["events"][0] for r in good]
    e2e = [r["events"][-1] for r in good]
    tpot = [(r["events"][-1] - r["events"][0]) / (r["output_tokens"] - 1)
            for r in good if r["output_tokens"] > 1]
    itl = [b - a for r in good for a, b in zip(r["events"], r["events"][1:])]
    if good:
        duration = max(r["end"] for r in good) - min(r["start"] for r in good)
    else:
        duration = 0.0
    tokens = sum(r["output_tokens"] for r in good)
    out = {
        "mode": f"rate {args.rate}/s (Poisson)" if args.rate else f"concurrency {args.concurrency}",
        "requests": args.requests, "completed": len(good), "failed": len(failed),
        "prompt_tokens": args.prompt_len, "max_tokens": args.max_tokens,
        "duration_s": round(duration, 3),
        "request_throughput": round(len(good) / duration, 4) if duration else None,
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / duration, 2) if duration else None,
        "ttft_ms": summary(ttft), "tpot_ms": summary(tpot), "itl_ms": summary(itl),
        "e2e_ms": summary(e2e),
        "errors": sorted({r.get("error", "?") for r in failed if r})[:5],
    }
    if args.long_prompt_len:
        out["long"] = {"prompt_tokens": args.long_prompt_len, "at_s": args.long_at,
                       "ok": bool(long and long["ok"]),
                       "ttft_ms": round(long["events"][0] * 1e3, 2) if long and long["ok"]
                       else None,
                       "e2e_ms": round(long["events"][-1] * 1e3, 2) if long and long["ok"]
                       else None,
                       "error": long.get("error") if long else "not sent"}
        out["stall_ms"] = stall(good, long)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--model", default="", help="the model field to send (default: none)")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--concurrency", type=int, help="clients, each with one request at a time")
    mode.add_argument("--rate", type=float, help="Poisson arrivals, requests per second")
    ap.add_argument("--requests", type=int, required=True, help="requests in all")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=50257, help="prompt ids are taken mod this")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0, help="seed of the Poisson arrival times")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per request")
    ap.add_argument("--json", default="", help="also write the report here")
    ap.add_argument("--index-offset", type=int, default=0,
                    help="added to each request's number in its prompt: phases against one server "
                         "with different offsets share no prompt (no prefix reuse between them)")
    ap.add_argument("--shared-prefix-len", type=int, default=0,
                    help="prompt tokens every request shares at its start (a system prompt)")
    ap.add_argument("--long-prompt-len", type=int, default=0,
                    help="also send one request with a prompt this long (0: none)")
    ap.add_argument("--long-at", type=float, default=2.0,
                    help="seconds after the start to send the long request")
    ap.add_argument("--long-max-tokens", type=int, default=16)
    args = ap.parse_args()
    if (args.concurrency is not None and args.concurrency < 1) or (
            args.rate is not None and args.rate <= 0) or args.requests < 1 or \
            args.long_prompt_len < 0:
        print("serve_load: --concurrency and --requests must be >= 1, --rate > 0, "
              "--long-prompt-len >= 0",
              file=sys.stderr)
        return 2
    results, long = run(args)
    out = report(args, results, long)
    text = json.dumps(out)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(f"serve_load [{out['mode']}]: {out['completed']}/{out['requests']} ok in "
          f"{out['duration_s']} s; {out['request_throughput']} req/s, "
          f"{out['output_tokens_per_s']} output tok/s; TTFT p50 {out['ttft_ms']['p50']} ms "
          f"p99 {out['ttft_ms']['p99']} ms; TPOT p50 {out['tpot_ms']['p50']} ms; ITL p50 "
          f"{out['itl_ms']['p50']} p99 {out['itl_ms']['p99']} max {out['itl_ms']['max']} ms",
          file=sys.stderr)
    if args.long_prompt_len:
        print(f"serve_load: long request ({args.long_prompt_len} prompt tokens at "
              f"{args.long_at} s): TTFT {out['long']['ttft_ms']} ms; longest gap of another "
              f"stream while it waited: {out['stall_ms']} ms", file=sys.stderr)
    return 0 if not out["failed"] and (not args.long_prompt_len or out["long"]["ok"]) else 1


if __name__ == "__main__":
    sys.exit(main())
