// Run configuration: YAML into typed structs, validated. An unknown key, a wrong type or a bad
// value is an error naming the key, the file and line, and the fix. `--set a.b=value` overrides
// apply on top of the file; the resolved config can be printed back as YAML.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace tessera::core {

struct ModelConfig {
  std::string arch = "gpt2";  // GPT-2 family (learned positions, pre-LN, GELU MLP, tied head)
  int vocab_size = 4096;      // V: real tokens; the loss never sees padded rows
  int pad_vocab_to = 128;     // Vp = V rounded up to this multiple (never derived from tp)
  int max_seq_len = 256;      // maxT: rows of the positional embedding
  int n_layer = 4;            // L
  int n_head = 4;             // NH
  int n_embd = 128;           // C
  double init_std = 0.02;     // normal(0, init_std); residual projections scaled by 1/sqrt(2L)
  int padded_vocab_size() const {
    return (vocab_size + pad_vocab_to - 1) / pad_vocab_to * pad_vocab_to;
  }
  bool operator==(const ModelConfig&) const = default;
};

struct DataConfig {
  std::string train = "out/tiny/data/train.bin";  // token shard(s) (llm.c layout); comma-separated
  std::string val = "out/tiny/data/val.bin";
  std::string tokenizer =
      "out/tiny/data/tokenizer";  // prefix: <prefix>.vocab.json, <prefix>.merges.txt
  bool operator==(const DataConfig&) const = default;
};

struct TrainConfig {
  uint64_t seed = 1337;
  int steps = 200;
  int batch_size = 16;       // global batch in sequences per step (over all dp ranks)
  int micro_batch_size = 0;  // sequences per forward/backward on one rank; 0 = batch_size / dp
  int seq_len = 64;          // T
  int val_every = 50;        // 0: never
  int val_batches = 8;
  int log_every = 1;
  std::string out_dir = "out/tiny";  // final weights, metrics.jsonl
  std::string timeline;              // Chrome-trace JSON path; empty: off
  std::string dtype = "fp32";        // fp32 | bf16 (bf16 is the CUDA backend's)
  std::string device = "cpu";        // cpu | cuda
  int threads = 0;                   // threads per rank; 0 = cores / local ranks
  std::string init_from;             // weights to fine-tune from; empty: init_std weights
  int skip_nonfinite = 0;            // non-finite loss/norm steps to skip before failing
  bool operator==(const TrainConfig&) const = default;
};

struct OptimConfig {
  double lr = 1e-3;      // peak learning rate
  double min_lr = 1e-4;  // cosine floor
  int warmup_steps = 20;
  std::string schedule = "cosine";  // cosine | constant
  double weight_decay = 0.1;        // decoupled; not applied to biases and layernorm parameters
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;  // global grad-norm clip; 0 = off
  int zero = 0;            // 1: ZeRO-1, AdamW moments sharded over dp (host arenas)
  bool operator==(const OptimConfig&) const = default;
};

struct ParallelConfig {
  int tp = 1;                  // tensor-parallel size; dp = world size / tp
  double bucket_mb = 25.0;     // GradientReducer fusion bucket cap
  bool overlap = true;         // start bucket all-reduces during backward
  bool compress_bf16 = false;  // bf16 wire format for the dp all-reduce
  // The tied wte's gradient split: LM-head part all-reduced during backward, the lookup's rows
  // all-gathered at the end. auto: where the gathered rows are at most a quarter of the table
  // (parallel::sparse_rows_pay) | on | off. CPU backend only (ignored on a device).
  std::string sparse_embedding = "auto";
  // ZeRO-1 with every rank of a dp group on one node: gradients and weights live in memory the
  // group's ranks share, so the sharded exchange is loads and stores, not MPI copies
  // (parallel::NodeSharedArenas). auto: wherever it can | on: an error where it cannot | off.
  std::string node_shared = "auto";
  // Shard the layernorm/residual activations along the sequence over tp (Megatron-LM sequence
  // parallelism); train.seq_len must divide by tp. Training only.
  bool sequence_parallel = false;
  // Seconds one blocking collective may last before the watchdog ends the job (a stalled
  // peer); 0 = off.
  double collective_timeout_s = 300.0;
  bool operator==(const ParallelConfig&) const = default;
};

struct CheckpointConfig {
  std::string dir;  // empty: off
  int every = 0;    // steps between checkpoints; 0: only the final one
  int keep = 3;
  std::string resume;  // "", "latest", "auto" (latest if there is one, else fresh) or a path
  std::string transfers = "independent";  // independent | collective (MPI-IO data transfers)
  bool operator==(const CheckpointConfig&) const = default;
};

// tessera-serve's options (docs/SERVING.md); the other apps ignore this section, and
// tessera-serve reads only it (the model comes from the checkpoint). Its command-line flags
// override these keys.
struct ServeConfig {
  std::string host = "127.0.0.1";  // address to listen on
  int port = 8000;                 // TCP port; 0 picks a free one
  int max_sequences = 8;           // sequences decoded at once per replica (KV-cache slots)
  int max_queue = 64;              // requests waiting beyond the free slots, per replica
  double kv_cache_mb = 0;          // KV-cache pool per rank in MiB (paged); 0: whole contexts
  int max_prefill_tokens = 0;      // prompt tokens prefilled per decode step; 0: by device
  bool prefix_cache = true;        // reuse a freed slot's keys and values for a shared prefix
  int tp = 0;                      // tensor-parallel size; 0: every rank (one replica)
  std::string device = "cpu";      // cpu | cuda
  std::string tokenizer;           // tokenizer prefix; empty: the checkpoint's data.tokenizer
  std::string model_name;          // the name /v1/models reports; empty: the checkpoint path
  int threads = 0;                 // compute threads per rank; 0 = cores / local ranks
  bool operator==(const ServeConfig&) const = default;
};

struct Config {
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  OptimConfig optim;
  ParallelConfig parallel;
  CheckpointConfig checkpoint;
  ServeConfig serve;

  // Cross-field checks every rank can make alone (sizes, names, ranges); names key and fix.
  Status validate() const;
  // The resolved config as YAML text (printed at start, saved with checkpoints).
  std::string to_yaml() const;
  bool operator==(const Config&) const = default;
};

// One row of the field table that drives parsing, overrides and to_yaml: the key path
// ("model.n_layer"), its type as docs/CONFIG.md names it (int, uint64, float, bool, string) and
// its default written as to_yaml writes it. A test checks docs/CONFIG.md against this list.
struct ConfigKeyInfo {
  std::string key;
  std::string type;
  std::string default_value;
};
std::vector<ConfigKeyInfo> config_keys();

// The serve section's rules (part of Config::validate); tessera-serve checks its flags' values
// with them too. Errors name the key and the fix.
Status validate_serve(const ServeConfig& serve);

// Loads `path` (YAML), applies `overrides` ("a.b=value", in order), validates.
// Errors: missing/unreadable file, YAML syntax (with line), unknown key (with file:line and the
// nearest known key), wrong type (key, value, expected type), bad override syntax or key.
Result<Config> load_config(const std::string& path, const std::vector<std::string>& overrides);
// Same from YAML text; `source_name` is used in messages in place of a file name.
Result<Config> parse_config(const std::string& yaml_text, const std::string& source_name,
                            const std::vector<std::string>& overrides);

}  // namespace tessera::core
