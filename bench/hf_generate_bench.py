#!/usr/bin/env python3
"""The Hugging Face peer of issue 13's generation benchmark (bench/run_gpu_bench.sh): transformers'
GPT2LMHeadModel (GPT-2 124M shape, random weights: no download), bf16 on the GPU, KV cache,
greedy `generate` of exactly --new tokens after a prompt of --prompt random token ids, at each
batch size of --batches. Timed as bench_decode --new times Tessera: the whole call, prefill
included, one untimed call first, then the median of --runs; tokens/s = batch x new / seconds.

  python3 bench/hf_generate_bench.py [--batches 1,16,64] [--prompt 64] [--new 128] [--runs 3]

Prints one JSON line per batch size. Needs transformers (the GPU machine's image has it; this
machine's Debian python does not, so the script is only run there).
"""

import argparse
import json
import statistics
import sys
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("hf_generate_bench: no CUDA device visible to PyTorch")
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model = GPT2LMHeadModel(cfg).to("cuda", dtype=dtype).eval()
    g = torch.Generator().manual_seed(5)
    for B in (int(b) for b in args.batches.split(",")):
        ids = torch.randint(0, cfg.vocab_size, (B, args.prompt), generator=g).cuda()
        mask = torch.ones_like(ids)
        times = []
        for run in range(args.runs + 1):
            torch.cuda.synchronize()
            t = time.perf_counter()
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                     max_new_tokens=args.new, min_new_tokens=args.new,
                                     pad_token_id=cfg.eos_token_id, use_cache=True)
            torch.cuda.synchronize()
            if run > 0:
                times.append(time.perf_counter() - t)
            new = out.shape[1] - args.prompt
            if new != args.new:
                sys.exit(f"hf_generate_bench: generate gave {new} new tokens, not {args.new}")
        med = statistics.median(times)
        print(json.dumps({"impl": "hf-generate", "device": torch.cuda.get_device_name(0),
                          "torch": torch.__version__, "transformers": transformers.__version__,
                          "dtype": args.dtype, "batch": B, "prompt": args.prompt,
                          "new_tokens": args.new, "runs_s": times,
                          "tokens_per_s": B * args.new / med}), flush=True)


if __name__ == "__main__":
    main()
