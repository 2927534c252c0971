#!/usr/bin/env bash
# Issue 13's benchmark on a lent GPU machine, every peer back to back in one call with the same
# shapes (docs/PERF.md "GPU"): GPT-2 124M training at B 64, T 1024, bf16, random tokens:
#   - the bf16 GEMM peak (PyTorch, 8192^3), which every MFU below is against;
#   - PyTorch eager and torch.compile (bench/torch_gpu_train_bench.py: nanoGPT-style, flash SDPA,
#     fused AdamW);
#   - llm.c's train_gpt2cu (bf16, recompute on, no cuDNN), when the bundle carries it (built here
#     from its own source, never committed: docs/PERF.md says how);
#   - Tessera's bench_train --device cuda --dtype bf16 (and gpt2-350m for its MFU);
# then generation, prompt 64 + 128 new tokens, greedy, at batch 1, 16 and 64: Hugging Face
# `generate` (bench/hf_generate_bench.py, bf16) against Tessera's bench_decode --device cuda
# --new 128 (fp32 and bf16 GEMM operands).
# Every JSON line goes to $OUT/bench/gpu_bench.jsonl and a table with the goals to
# $OUT/bench/summary.md (also printed). Each program runs under a time limit; one that fails is
# reported and the rest still run. Exits non-zero when any run failed.
#   tar -xJf gpu-bundle.tar.xz && bash gpu-bundle/run_gpu_bench.sh [--quick]
# --quick: fewer steps and runs. DEVICE=cpu BATCH=2 SEQ=64 GEN_BATCHES="1 2" NEW=8 with --quick
# runs the same script on a CPU with small shapes (no llm.c, no Hugging Face): how the script
# itself was checked without a GPU.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-/tmp/tessera-gpu}/bench
mkdir -p "$out"
quick=0
[[ ${1:-} == --quick ]] && quick=1
steps=20 warmup=5 runs=3
((quick)) && steps=3 warmup=1 runs=1
device=${DEVICE:-cuda} B=${BATCH:-64} T=${SEQ:-1024} gen_batches=${GEN_BATCHES:-1 16 64} new=${NEW:-128}
wheels=$(python3 -c "import glob, os, nvidia; print(':'.join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], '*', 'lib')))))" 2>/dev/null)
export LD_LIBRARY_PATH="$here/lib:${wheels}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
if [[ -d "$here/openmpi" ]]; then  # bench_train and bench_decode call MPI_Init (singleton)
  export OPAL_PREFIX="$here/openmpi" OPAL_LIBDIR="$here/openmpi/lib" OPAL_PKGDATADIR="$here/openmpi/share/openmpi"
  export PATH="$here/openmpi/bin:$PATH" OMPI_MCA_mca_base_component_path="$here/openmpi/lib/openmpi3"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_ess_singleton_isolated=1
fi
export PYTHONUNBUFFERED=1
jsonl="$out/gpu_bench.jsonl"
: > "$jsonl"
failed=0
[[ $device == cuda ]] &&
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"

# run NAME LIMIT_S CMD...: runs CMD under a time limit, its output in NAME.log, its JSON lines
# (tagged with "run": NAME) appended to gpu_bench.jsonl.
run() {
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*" | tee -a "$out/commands.txt"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "   exit $rc after $((SECONDS - t0)) s"
  grep '^{' "$out/$name.log" | python3 -c '
import json, sys
for line in sys.stdin:
    d = json.loads(line); d["run"] = sys.argv[1]; print(json.dumps(d))' "$name" >> "$jsonl"
  if ((rc != 0)); then
    failed=1
    tail -5 "$out/$name.log"
  fi
  return $rc
}

# ---- Training: GPT-2 124M, B 64, T 1024, bf16 ------------------------------------------------
tb="$here/bench/torch_gpu_train_bench.py"
run torch_peak 120 python3 "$tb" --device "$device" --peak-only
peak=$(python3 -c 'import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d["run"] == "torch_peak": print(d["peak_tflops"])' "$jsonl")
peak=${peak:-0}
targs=(--device "$device" --config 124m --batch $B --seq $T --steps $steps --warmup $warmup)
run torch_eager_124m 300 python3 "$tb" "${targs[@]}"
[[ $device == cuda ]] && run torch_compile_124m 420 python3 "$tb" "${targs[@]}" --compile

if [[ -x "$here/bin/train_gpt2cu" && $device == cuda ]]; then
  # llm.c reads token files (a 256 x int32 header: magic 20240520, version 1, token count; then
  # uint16 tokens below 50257); random tokens, as the other peers train on, enough that its loader
  # does not wrap (and reshuffle inside a timed step) during the run. Its flags: -v 100000 -m 1
  # (validation cannot be switched off: -v 0 divides by zero; it runs outside the timed step),
  # -s 0 (no sampling: there is no tokenizer file), -n 0 (no checkpoints), never -lg (NVML is
  # not built in).
  python3 - "$out/llmc" << 'EOF'
import os, sys
import numpy as np
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
rng = np.random.default_rng(7)
for name, n in (("train", 64 * 1024 * 40 + 1), ("val", 64 * 1024 * 2 + 1)):
    header = np.zeros(256, dtype=np.int32)
    header[:3] = (20240520, 1, n)
    with open(os.path.join(d, f"bench_{name}.bin"), "wb") as f:
        f.write(header.tobytes())
        f.write(rng.integers(0, 50257, n, dtype=np.uint16).tobytes())
EOF
  llmc_steps=$((steps + warmup))
  pushd "$out/llmc" > /dev/null
  run llmc_124m 300 "$here/bin/train_gpt2cu" -e d12 \
    -i "$out/llmc/bench_train.bin" -j "$out/llmc/bench_val.bin" -o "$out/llmc/log" \
    -b $B -t $T -d $((B * T)) -x $llmc_steps -v 100000 -m 1 -s 0 -n 0 -h 0 -r 1 -l 1e-4
  popd > /dev/null
  # Its step lines ("step N/M | ... | X ms | ..."): tokens/s from the median of the steps after the
  # warm-up, as the other peers are timed.
  python3 - "$out/llmc_124m.log" $warmup $B $T >> "$jsonl" << 'EOF'
import json, re, statistics, sys
ms = [float(m.group(1)) for m in re.finditer(r"^step\s+\d+/\d+ \|.*\| ([0-9.]+) ms \|", open(sys.argv[1]).read(), re.M)]
w, B, T = (int(a) for a in sys.argv[2:5])
if len(ms) > w:
    med = statistics.median(ms[w:])
    print(json.dumps({"run": "llmc_124m", "impl": "llm.c", "B": B, "T": T, "steps": len(ms) - w,
                      "step_ms_median": med, "tokens_per_s": B * T / (med / 1e3)}))
EOF
else
  echo "== llmc_124m: no bin/train_gpt2cu in the bundle; llm.c left out" | tee -a "$out/commands.txt"
fi

bt="$here/bin/bench_train"
tess_train() {  # NAME CONFIG B MICRO: the whole batch in one pass, else in micro-batches
  run "$1" 420 "$bt" --config "$here/configs/$2.yaml" --device "$device" --dtype bf16 \
    --batch "$3" --micro-batch "$4" --seq $T --steps $steps --warmup $warmup --peak-tflops "$peak"
}
micro=0
tess_train tessera_124m gpt2-124m $B 0 || {
  micro=$((B / 4))
  tess_train tessera_124m_micro gpt2-124m $B $micro
}
# The same with the plain attention kernels (TESSERA_CUDA_ATTENTION=plain): what the fused ones buy.
[[ $device == cuda ]] && TESSERA_CUDA_ATTENTION=plain tess_train tessera_plain_attention_124m \
  gpt2-124m $B $micro
tess_train tessera_350m gpt2-350m $((B / 2)) 0 || tess_train tessera_350m_micro gpt2-350m $((B / 2)) $((B / 8))

# ---- Generation: prompt 64 + 128 new, greedy ---------------------------------------------------
[[ $device == cuda ]] && run hf_generate 420 python3 "$here/bench/hf_generate_bench.py" \
  --batches "${gen_batches// /,}" --new $new --runs $runs
bd="$here/bin/bench_decode"
for dtype in fp32 bf16; do
  for rows in $gen_batches; do
    run "tessera_generate_${dtype}_b$rows" 300 "$bd" --config "$here/configs/gpt2-124m.yaml" \
      --device "$device" --dtype $dtype --rows $rows --prompt 64 --steps 20 --prefill-reps 3 \
      --new $new --runs $runs
  done
done

# ---- Summary against issue 13's goals -----------------------------------------------------------
python3 - "$jsonl" "$B" "$T" "$new" "$gen_batches" "$device" << 'EOF' | tee "$out/summary.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
B, T, new = sys.argv[2:5]
gen_batches = [int(b) for b in sys.argv[5].split()]
device = sys.argv[6]
def get(run_prefix, key="tokens_per_s", **match):
    for r in rows:
        if r["run"].startswith(run_prefix) and all(r.get(k) == v for k, v in match.items()):
            return r.get(key)
    return None
fmt = lambda x, f="{:.0f}": "-" if x is None else f.format(x)
ratio = lambda a, b: None if a is None or b in (None, 0) else a / b
peak = get("torch_peak", "peak_tflops")
tess, comp = get("tessera_124m"), get("torch_compile_124m")
eager, llmc = get("torch_eager_124m"), get("llmc_124m")
print(f"GEMM peak (PyTorch; bf16 8192^3 on a GPU): {fmt(peak, '{:.4g}')} TFLOP/s\n")
print(f"| GPT-2 124M, B {B}, T {T}, bf16 | tokens/s | Tessera / it | goal |")
print("|---|---|---|---|")
print(f"| Tessera (bench_train --device {device}) | {fmt(tess)} | | |")
print(f"| PyTorch eager | {fmt(eager)} | {fmt(ratio(tess, eager), '{:.2f}x')} | |")
print(f"| PyTorch torch.compile | {fmt(comp)} | {fmt(ratio(tess, comp), '{:.2f}x')} | >= 1.1x |")
print(f"| llm.c train_gpt2cu | {fmt(llmc)} | {fmt(ratio(tess, llmc), '{:.2f}x')} | >= 1.6x |")
plain = get("tessera_plain_attention_124m")
print(f"\nTessera 124M with the plain attention kernels (TESSERA_CUDA_ATTENTION=plain): {fmt(plain)} tokens/s")
for run in ("tessera_124m", "tessera_350m"):
    mfu = get(run, "mfu")
    print(f"\n{run}: MFU {fmt(None if mfu is None else 100 * mfu, '{:.1f}%')} of the bf16 GEMM peak"
          + (" (goal for 350m: >= 50%)" if run == "tessera_350m" else ""))
print(f"\n| generation, 124M, prompt 64 + {new} new | HF generate bf16 | Tessera fp32 | Tessera bf16 | bf16 / HF | goal |")
print("|---|---|---|---|---|---|")
for b in gen_batches:
    goal = {1: ">= 10x", 64: ">= 3x"}.get(b, "")
    hf = get("hf_generate", batch=b)
    t32 = get(f"tessera_generate_fp32_b{b}", "generate_tokens_per_s")
    t16 = get(f"tessera_generate_bf16_b{b}", "generate_tokens_per_s")
    print(f"| batch {b} | {fmt(hf)} | {fmt(t32)} | {fmt(t16)} | {fmt(ratio(t16, hf), '{:.2f}x')} | {goal} |")
EOF
echo "run_gpu_bench: logs and gpu_bench.jsonl in $out"
exit $failed
