#!/usr/bin/python3
"""The PyTorch peer of the serving benchmark (bench/run_serve_bench.sh): a plain GPT-2 with a KV
cache, greedy, batch 1, on Debian's python3-torch. The weights are a Tessera checkpoint exported
by scripts/ckpt_to_torch.py and loaded into scripts/torch_gpt2.py's GPT (the fidelity reference);
the decode loop below adds what that model lacks, a per-layer key/value cache: the prompt is
prefilled in one forward, then each new token is one forward of a single position attending to
the cache (torch.cat growth, as a plain implementation does).

  /usr/bin/python3 bench/torch_kv_generate.py gpt2.pt [--prompt-len 64] [--new 128] [--runs 3]
      [--threads N] [--check]

Prints one JSON line: prompt and new token counts, threads, the seconds of each run (prefill +
decode of all new tokens, after one warm-up run) and tokens_per_s = new / median seconds.
--check also runs full recomputation (no cache) for the same tokens and fails unless every
greedy token matches: the cache is right, not just fast.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from check_torch_export import build_model  # noqa: E402


@torch.no_grad()
def forward_cached(model, tokens, start, cache):
    """Logits (T, V) of `tokens` (1, T) at positions start..start+T-1; extends cache[l] = (k, v),
    each (1, NH, start + T, HS)."""
    T = tokens.shape[1]
    x = model.wte[tokens] + model.wpe[start:start + T]
    for layer, blk in enumerate(model.h):
        a = blk.attn
        h = blk.ln_1(x)
        C = h.shape[-1]
        NH, HS = a.NH, C // a.NH
        q, k, v = a.qkv(h).split(C, dim=2)
        q = q.view(1, T, NH, HS).transpose(1, 2)
        k = k.view(1, T, NH, HS).transpose(1, 2)
        v = v.view(1, T, NH, HS).transpose(1, 2)
        if cache[layer] is not None:
            k = torch.cat([cache[layer][0], k], dim=2)
            v = torch.cat([cache[layer][1], v], dim=2)
        cache[layer] = (k, v)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(HS))  # (1, NH, T, start + T)
        if T > 1:  # the prompt: causal within it (the cache is empty before it)
            att = att.masked_fill(~a.mask[start:start + T, :start + T], float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(1, T, C)
        x = x + a.proj(y)
        x = x + blk.mlp(blk.ln_2(x))
    x = model.ln_f(x)
    return x[0] @ model.wte[: model.cfg.V].t()


@torch.no_grad()
def generate(model, prompt, new):
    cache = [None] * len(model.h)
    logits = forward_cached(model, torch.tensor([prompt]), 0, cache)
    out = []
    for i in range(new):
        nxt = int(torch.argmax(logits[-1]))
        out.append(nxt)
        if i + 1 < new:
            logits = forward_cached(model, torch.tensor([[nxt]]), len(prompt) + i, cache)
    return out


@torch.no_grad()
def generate_recompute(model, prompt, new):
    tokens = list(prompt)
    for _ in range(new):
        logits, _ = model(torch.tensor([tokens]))
        tokens.append(int(torch.argmax(logits[0, -1])))
    return tokens[len(prompt):]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pt", help="state_dict from scripts/ckpt_to_torch.py (its .json beside it)")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--check", action="store_true", help="compare with full recomputation")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model = build_model(args.pt)
    if args.prompt_len + args.new > model.cfg.maxT:
        print(f"torch_kv_generate: {args.prompt_len} + {args.new} tokens exceed the context "
              f"{model.cfg.maxT}", file=sys.stderr)
        return 2
    # The prompt the load generator sends too: ids (7 i + 11) mod V.
    prompt = [(7 * i + 11) % model.cfg.V for i in range(args.prompt_len)]
    first = generate(model, prompt, args.new)  # warm-up
    if args.check:
        ref = generate_recompute(model, prompt, args.new)
        if ref != first:
            bad = next(i for i, (a, b) in enumerate(zip(ref, first)) if a != b)
            print(f"torch_kv_generate: the cached decode differs from recomputation at token "
                  f"{bad}", file=sys.stderr)
            return 1
    seconds = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        out = generate(model, prompt, args.new)
        seconds.append(time.perf_counter() - t0)
        assert out == first, "greedy decoding must repeat"
    print(json.dumps({"impl": "pytorch-kv", "torch": torch.__version__, "prompt_tokens":
                      args.prompt_len, "new_tokens": args.new, "threads": torch.get_num_threads(),
                      "seconds": [round(s, 3) for s in seconds],
                      "tokens_per_s": round(args.new / statistics.median(seconds), 2),
                      "checked_against_recompute": args.check, "first_tokens": first[:8]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
