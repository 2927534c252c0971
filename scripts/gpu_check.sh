#!/usr/bin/env bash
# On a lent GPU machine (docs/CUDA.md): runs every CUDA test packed by scripts/gpu_bundle.sh and
# prints a short table last. Logs go to $OUT (the device tool's return folder) when set. Exits
# non-zero when any GPU test fails or cannot run (no GPU here counts as a failure: this script
# exists to check the GPU path).
#   tar -xJf gpu-bundle.tar.xz && bash gpu-bundle/gpu_check.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-/tmp/tessera-gpu}
mkdir -p "$out"
# The GPU image's CUDA libraries: its toolkit, and the pip wheels beside its PyTorch.
wheels=$(python3 -c "import glob, os, nvidia; print(':'.join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], '*', 'lib')))))" 2>/dev/null)
export LD_LIBRARY_PATH="$here/lib:${wheels}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$out/gpu.txt"
summary=()
failed=0
# The bundled Open MPI (the GPU image has none): every program here calls MPI_Init, alone
# (singleton, kept in-process) or under orterun.
if [[ -d "$here/openmpi" ]]; then
  export OPAL_PREFIX="$here/openmpi" OPAL_LIBDIR="$here/openmpi/lib" OPAL_PKGDATADIR="$here/openmpi/share/openmpi"
  export PATH="$here/openmpi/bin:$PATH" OMPI_MCA_mca_base_component_path="$here/openmpi/lib/openmpi3"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_ess_singleton_isolated=1
fi
"$here/bin/tessera_cuda_tests" --gtest_output=xml:"$out/cuda_tests.xml" > "$out/cuda_tests.log" 2>&1
rc=$?
((rc == 0)) || failed=1
summary+=("tessera_cuda_tests: exit $rc, $(grep -E '^\[  (PASSED|FAILED) ' "$out/cuda_tests.log" | tr '\n' ' ')")
if [[ -x "$here/bin/tessera_cuda_mpi_tests" && -d "$here/openmpi" ]]; then
  for np in 1 2 4; do
    orterun --oversubscribe -n $np -x LD_LIBRARY_PATH "$here/bin/tessera_cuda_mpi_tests" \
      > "$out/cuda_mpi_np$np.log" 2>&1
    rc=$?
    ((rc == 0)) || failed=1
    summary+=("tessera_cuda_mpi_tests np $np: exit $rc")
  done
fi
# Training on the GPU with the apps (when bundled): the tiny model for 20 steps on the CPU and on
# CUDA from the same seed (losses equal within relative 1e-5; on CUDA with the fused attention
# kernels and again with the plain ones), then dp 2 and tp 2 on CUDA with two
# ranks sharing the GPU (NCCL told apart by NCCL_HOSTID), each against the 1-rank CUDA losses.
if [[ -x "$here/bin/tessera-train" ]]; then
  work="$out/train"
  mkdir -p "$work"
  "$here/bin/tessera-data" prepare --input "$here/data/shakespeare.txt" --vocab-size 4096 \
    --out-dir "$work/data" > "$work/data.log" 2>&1 || failed=1
  sets=(--set "data.train=$work/data/train.bin" --set "data.val=$work/data/val.bin"
        --set "data.tokenizer=$work/data/tokenizer" --set train.steps=20 --set train.val_every=0)
  for dev in cpu cuda; do
    "$here/bin/tessera-train" "$here/configs/tiny.yaml" "${sets[@]}" --set "train.device=$dev" \
      --set "train.out_dir=$work/$dev" > "$work/$dev.log" 2>&1
    rc=$?
    ((rc == 0)) || failed=1
    summary+=("tessera-train tiny 20 steps on $dev: exit $rc")
  done
  # The same on CUDA with the plain attention kernels (the run above takes the fused ones: the
  # tiny model's heads are 32 wide), so a fault in one set of kernels does not hide the other's.
  TESSERA_CUDA_ATTENTION=plain "$here/bin/tessera-train" "$here/configs/tiny.yaml" "${sets[@]}" \
    --set train.device=cuda --set "train.out_dir=$work/cuda_plain" > "$work/cuda_plain.log" 2>&1
  rc=$?
  ((rc == 0)) || failed=1
  summary+=("tessera-train tiny 20 steps on cuda, plain attention kernels: exit $rc")
  if [[ -x "$here/openmpi/bin/orterun" ]]; then
    for grid in tp dp; do
      tp=2
      [[ $grid == dp ]] && tp=1
      orterun --oversubscribe -n 2 -x LD_LIBRARY_PATH bash -c \
        'NCCL_HOSTID=gpu-check-$OMPI_COMM_WORLD_RANK exec "$@"' _ \
        "$here/bin/tessera-train" "$here/configs/tiny.yaml" "${sets[@]}" --set train.device=cuda \
        --set "parallel.tp=$tp" --set "train.out_dir=$work/cuda_${grid}2" > "$work/cuda_${grid}2.log" 2>&1
      rc=$?
      ((rc == 0)) || failed=1
      summary+=("tessera-train tiny 20 steps on cuda, $grid 2 (2 ranks, one GPU): exit $rc")
    done
  fi
  # Each run's losses against the reference run's, relative 1e-5 (DESIGN.md: backend equivalence
  # and layout invariance).
  compare=$(python3 - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
def losses(run):
    path = os.path.join(work, run, "metrics.jsonl")
    return [json.loads(l)["loss"] for l in open(path)] if os.path.exists(path) else None
ok = True
for run, ref in [("cuda", "cpu"), ("cuda_plain", "cpu"), ("cuda_tp2", "cuda"), ("cuda_dp2", "cuda")]:
    a, b = losses(run), losses(ref)
    if a is None or b is None:
        print(f"{run} vs {ref}: missing metrics"); ok = False; continue
    worst = max(abs(x - y) / abs(y) for x, y in zip(a, b)) if len(a) == len(b) else float("inf")
    good = len(a) == len(b) == 20 and worst <= 1e-5
    ok &= good
    print(f"{run} vs {ref}: {len(a)} steps, largest relative loss difference {worst:.2e} "
          f"({'ok' if good else 'FAIL'}, limit 1e-5)")
sys.exit(0 if ok else 1)
PY
)
  rc=$?
  ((rc == 0)) || failed=1
  summary+=("$compare")
  # bf16 (train.dtype: bf16 activations and GEMM operands, fp32 accumulation): the tiny model
  # 200 steps on CUDA in fp32 and in bf16 (validation loss at step 200 and the last 20 steps' mean
  # within 1%), and the CUDA bf16 run's first 20 losses against the CPU backend's bf16 reference
  # (within 1e-3, the bf16 grids' bar: the fp32 sums' order differs, so an occasional value rounds
  # the other way).
  for run in "cuda fp32 200" "cuda bf16 200" "cpu bf16 20"; do
    read -r dev dtype steps <<< "$run"
    "$here/bin/tessera-train" "$here/configs/tiny.yaml" "${sets[@]}" --set "train.steps=$steps" \
      --set "train.val_every=$steps" --set train.val_batches=8 --set "train.device=$dev" \
      --set "train.dtype=$dtype" --set "train.out_dir=$work/${dev}_${dtype}_$steps" \
      > "$work/${dev}_${dtype}_$steps.log" 2>&1
    rc=$?
    ((rc == 0)) || failed=1
    summary+=("tessera-train tiny $steps steps on $dev, $dtype: exit $rc")
  done
  compare=$(python3 - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
def records(run):
    path = os.path.join(work, run, "metrics.jsonl")
    return [json.loads(l) for l in open(path)] if os.path.exists(path) else None
ok = True
a, b = records("cuda_bf16_200"), records("cuda_fp32_200")
if a is None or b is None:
    print("bf16 vs fp32 on cuda: missing metrics"); ok = False
else:
    for what, x, y in [("val loss at 200", [r["val_loss"] for r in a if "val_loss" in r][-1:],
                        [r["val_loss"] for r in b if "val_loss" in r][-1:]),
                       ("mean loss of steps 181-200", [sum(r["loss"] for r in a[-20:]) / 20],
                        [sum(r["loss"] for r in b[-20:]) / 20])]:
        good = len(a) == len(b) == 200 and x and y and abs(x[0] - y[0]) <= 0.01 * abs(y[0])
        ok &= bool(good)
        print(f"cuda bf16 vs fp32, {what}: {x} vs {y} ({'ok' if good else 'FAIL'}, limit 1%)")
c, d = records("cuda_bf16_200"), records("cpu_bf16_20")
if c is None or d is None:
    print("bf16 cuda vs cpu: missing metrics"); ok = False
else:
    worst = max(abs(x["loss"] - y["loss"]) / abs(y["loss"]) for x, y in zip(c[:20], d))
    good = len(d) == 20 and worst <= 1e-3
    ok &= good
    print(f"bf16, cuda vs cpu, steps 1-20: largest relative loss difference {worst:.2e} "
          f"({'ok' if good else 'FAIL'}, limit 1e-3)")
sys.exit(0 if ok else 1)
PY
)
  rc=$?
  ((rc == 0)) || failed=1
  summary+=("$compare")
fi
# Generation on the GPU: greedy text from the tiny model trained above, on the CPU and on CUDA
# (fp32): the same text (issue 13: CUDA greedy generation = CPU greedy generation).
if [[ -x "$here/bin/tessera-generate" && -s "$out/train/cuda/model.h5" ]]; then
  for dev in cpu cuda; do
    "$here/bin/tessera-generate" "$out/train/cuda/model.h5" --prompt "ROMEO:" --greedy \
      --max-tokens 64 --device "$dev" > "$out/train/generate_$dev.txt" 2> "$out/train/generate_$dev.log"
    rc=$?
    ((rc == 0)) || failed=1
    summary+=("tessera-generate tiny greedy 64 tokens on $dev: exit $rc")
  done
  if [[ -s "$out/train/generate_cpu.txt" ]] && cmp -s "$out/train/generate_cpu.txt" "$out/train/generate_cuda.txt"; then
    summary+=("greedy text on cuda = on cpu: ok")
  else
    failed=1
    summary+=("greedy text on cuda = on cpu: FAIL (diff $out/train/generate_{cpu,cuda}.txt)")
  fi
  # bf16 GEMM operands with the weights converted once (CudaBackend's frozen copies): it runs and
  # continues the prompt. Its text is not compared (another summation order than the CPU's).
  "$here/bin/tessera-generate" "$out/train/cuda/model.h5" --prompt "ROMEO:" --greedy \
    --max-tokens 64 --device cuda --dtype bf16 > "$out/train/generate_cuda_bf16.txt" \
    2> "$out/train/generate_cuda_bf16.log"
  rc=$?
  [[ $rc == 0 && $(head -c 6 "$out/train/generate_cuda_bf16.txt") == "ROMEO:" ]] || failed=1
  summary+=("tessera-generate tiny greedy bf16 on cuda: exit $rc, $(wc -c < "$out/train/generate_cuda_bf16.txt") bytes")
fi
# Serving on the CUDA backend (issue 14's bench there): GPT-2 124M, fp32, weights one training
# step from the init, tessera-serve --device cuda with 16 sequences; streamed greedy requests of
# 64 prompt ids + 128 new tokens at concurrency 1 and 16, then Poisson arrivals at half the
# concurrency-16 request rate (bench/serve_load.py). Figures go to docs/PERF.md "Serving".
if [[ -x "$here/bin/tessera-serve" && -s "$here/data/gpt2.vocab.json" ]]; then
  work="$out/serve"
  mkdir -p "$work"
  ln -sf "$here/data/gpt2.vocab.json" "$work/gpt2.vocab.json"
  ln -sf "$here/data/gpt2.merges.txt" "$work/gpt2.merges.txt"
  "$here/bin/tessera-data" tokenize --tokenizer "$work/gpt2" --input "$here/data/shakespeare.txt" \
    --train-out "$work/train.bin" --val-out "$work/val.bin" > "$work/data.log" 2>&1 || failed=1
  "$here/bin/tessera-train" "$here/configs/gpt2-124m.yaml" --set train.steps=1 --set train.seq_len=64 \
    --set train.batch_size=1 --set train.val_every=0 --set train.device=cuda \
    --set "data.train=$work/train.bin" --set "data.val=$work/val.bin" \
    --set "data.tokenizer=$work/gpt2" --set "train.out_dir=$work/run" \
    --set "checkpoint.dir=$work/run/ckpt" > "$work/train.log" 2>&1
  rc=$?
  ((rc == 0)) || failed=1
  summary+=("tessera-train gpt2-124m 1 step on cuda: exit $rc")
  if ((rc == 0)); then
    "$here/bin/tessera-serve" "$work/run/model.h5" --port 0 --tokenizer "$work/gpt2" \
      --device cuda --max-sequences 16 --max-queue 256 > "$work/serve.log" 2>&1 &
    server=$!
    port=""
    for _ in $(seq 1 1200); do
      port=$(sed -n 's/^tessera-serve: ready on http:\/\/[^:]*:\([0-9][0-9]*\) .*/\1/p' "$work/serve.log")
      [[ -n $port ]] && break
      kill -0 "$server" 2> /dev/null || break
      sleep 0.1
    done
    if [[ -n $port ]]; then
      load() { python3 "$here/bench/serve_load.py" --port "$port" --prompt-len 64 --max-tokens 128 "$@"; }
      # Each phase its own prompts (--index-offset): no prefix reuse between phases.
      load --concurrency 1 --requests 1 --index-offset 100000 > /dev/null 2>&1
      load --concurrency 1 --requests 8 --json "$work/c1.json" > /dev/null 2> "$work/c1.log" || failed=1
      load --concurrency 16 --requests 64 --index-offset 1000 --json "$work/c16.json" > /dev/null \
        2> "$work/c16.log" || failed=1
      rate=$(python3 -c "import json; print(json.load(open('$work/c16.json'))['request_throughput'] / 2)" 2> /dev/null)
      if [[ -n $rate ]]; then
        load --rate "$rate" --requests 48 --seed 1 --index-offset 2000 --json "$work/poisson.json" > /dev/null \
          2> "$work/poisson.log" || failed=1
      fi
      summary+=("serving on cuda, 124M, 64 + 128 tokens: $(tail -qn1 "$work"/c1.log "$work"/c16.log "$work"/poisson.log 2> /dev/null | tr '\n' ' ')")
    else
      failed=1
      summary+=("tessera-serve --device cuda: not ready (see $work/serve.log)")
    fi
    kill -TERM "$server" 2> /dev/null
    wait "$server"
    rc=$?
    ((rc == 0)) || failed=1
    summary+=("tessera-serve --device cuda: SIGTERM, exit $rc")
  fi
fi
grep -E '^\[  FAILED  \]' "$out"/*.log | head -40
printf '%s\n' "${summary[@]}"
if ((failed)); then
  echo "gpu_check: FAILED (a GPU test failed or could not run; logs in $out)"
  exit 1
fi
echo "gpu_check: every GPU test passed"
