#!/usr/bin/env python3
"""A queueing model of tessera-serve's step loop, for reasoning about TTFT tails (issue 14 (c)).

Not a benchmark: it predicts, from a step-cost model, what the Poisson phase of
bench/run_serve_bench.sh measures. Each iteration runs one step over every running sequence:
a decode row for each sequence whose prompt is cached, then prompt rows (prefill) up to a
per-step budget; a step costs d0 + c_dec * decode_rows + c_pre * prefill_rows seconds (fit the
three from bench_decode: the 1- and 16-row decode steps and the warm 64-row prefill). Requests
arrive as a Poisson process, at most `slots` run at once, and a request that arrives during a
step waits for it. Prefill policies: fcfs (oldest prompt first), share (the budget split evenly
over the prompts waiting), lifo (newest first).

Prints, for each budget and policy, the p99 / p50 TTFT ratio over many draws of N requests (the
bench's sample) and over one long run (the ratio's true value under the model).
Usage: bench/serve_step_model.py [--d0 S] [--c-dec S] [--c-pre S] [--rate R] [--requests N]
"""
import argparse
import random

from serve_load import percentile


def simulate(rate, n_req, budget, policy, d0, c_dec, c_pre, prompt, new, slots, seed):
    rng = random.Random(seed)
    t, arrivals = 0.0, []
    for _ in range(n_req):
        t += rng.expovariate(rate)
        arrivals.append(t)
    now, nxt, done, running, ttft = 0.0, 0, 0, [], []
    while done < n_req:
        while nxt < n_req and arrivals[nxt] <= now:
            running.append({"arrival": arrivals[nxt], "left": prompt, "emitted": 0})
            nxt += 1
        active = running[:slots]
        if not active:
            now = arrivals[nxt]
            continue
        decoding = [r for r in active if r["left"] == 0]
        waiting = [r for r in active if r["left"] > 0]
        if policy == "lifo":
            waiting.sort(key=lambda r: -r["arrival"])
        fed, room = [], budget
        share = max(1, budget // len(waiting)) if waiting and policy == "share" else budget
        for r in waiting:
            k = min(r["left"], share, room)
            if k == 0:
                break
            room -= k
            fed.append((r, k))
        now += d0 + c_dec * len(decoding) + c_pre * sum(k for _, k in fed)
        for r in decoding:
            r["emitted"] += 1
        for r, k in fed:
            r["left"] -= k
            if r["left"] == 0:
                ttft.append(now - r["arrival"])
                r["emitted"] = 1
        for r in [r for r in running if r["emitted"] >= new]:
            running.remove(r)
            done += 1
    # The percentiles as the bench reports them.
    return percentile(ttft, 50), percentile(ttft, 99)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d0", type=float, default=0.0167, help="a step's fixed cost, s")
    ap.add_argument("--c-dec", type=float, default=0.0013, help="per decode row, s")
    ap.add_argument("--c-pre", type=float, default=0.0007, help="per prefill row, s")
    ap.add_argument("--rate", type=float, default=1.41, help="requests per second")
    ap.add_argument("--requests", type=int, default=24, help="requests per draw (the bench's)")
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--slots", type=int, default=16)
    a = ap.parse_args()
    common = dict(d0=a.d0, c_dec=a.c_dec, c_pre=a.c_pre, prompt=a.prompt, new=a.new,
                  slots=a.slots)
    print(f"step = {a.d0 * 1e3:.1f} ms + {a.c_dec * 1e3:.2f} ms/decode row + "
          f"{a.c_pre * 1e3:.2f} ms/prefill row; Poisson {a.rate}/s; prompt {a.prompt} + "
          f"{a.new} new; {a.slots} slots")
    for budget in (a.prompt * a.slots, a.prompt, a.prompt // 2, a.prompt // 4):
        for policy in ("fcfs", "share", "lifo"):
            ratios = sorted(p99 / p50 for p50, p99 in (
                simulate(a.rate, a.requests, budget, policy, seed=s, **common)
                for s in range(a.draws)))
            p50, p99 = simulate(a.rate, 5000, budget, policy, seed=7, **common)
            q = lambda f: ratios[int(f * (len(ratios) - 1))]
            print(f"budget {budget:4d} {policy:5s}: p99/p50 over {a.requests} requests: median "
                  f"{q(0.5):.2f} (10-90%: {q(0.1):.2f}-{q(0.9):.2f}); over 5000: p50 "
                  f"{p50 * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms = {p99 / p50:.2f}")


if __name__ == "__main__":
    main()
