// GPT-2 family model (Radford et al. 2019): learned positions, pre-LayerNorm blocks, GELU MLP of
// 4C, tied embedding / LM head, biases, vocabulary padded to a config multiple. The model is a
// list of modules, each written once with forward, backward and a batched KV-cache decode:
//
//   VocabParallelEmbedding -> Block x L (LayerNorm, CausalSelfAttention, LayerNorm, Mlp)
//                          -> LayerNorm (ln_f) -> LmHead (tied to wte) + vocab-parallel xent
//
// Training (forward/backward), generation and serving all run these modules; they reach kernels
// only through a backends::Backend (CPU or CUDA), and their parameter shards, gradients and
// activations live in arenas on that backend's device, sized once at construction. Tensor
// parallel (Megatron-LM): vocab-parallel embedding, head and cross-entropy; heads and the MLP's
// hidden units split over tp. Sizes are per rank (`_local`). Sequence parallelism (Korthikanti
// et al. 2022), optional: the embedding's output, layernorms and residual stream of training
// calls hold T / tp rows of each sequence per tp rank (models/module.h, Rows); decode never
// shards.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "core/config.h"
#include "core/tensor.h"
#include "models/block.h"
#include "models/embedding.h"
#include "models/layernorm.h"
#include "models/lm_head.h"
#include "models/module.h"
#include "params/param_spec.h"

namespace tessera::parallel {
class Communicator;
class Timeline;
}  // namespace tessera::parallel

namespace tessera::models {

using backends::KernelTimes;
using params::ParamSet;
using params::ParamSpec;
class KvCache;

class Gpt {
 public:
  // Allocates this rank's parameter shard, its gradient twin and activations for micro-batches
  // of up to B sequences of up to T tokens (and decode batches of up to B * T rows), on
  // `backend` (nullptr: the process's CPU backend). tp_comm: the tensor-parallel group, on
  // memory of that backend's device (nullptr: no tensor parallelism); both borrowed for the
  // model's lifetime. Preconditions: config validated, T <= max_seq_len, grid checked
  // (parallel::check_grid). forward, backward and decode are collectives over tp_comm.
  // sequence_parallel: training calls shard the layernorm/residual regions along the sequence
  // over tp (a no-op at tp 1; T and every T_run must then divide by tp). It changes no
  // parameter, gradient or result beyond float rounding, only activation memory and which
  // collectives run; decode rows are then at most B * T / tp.
  // arenas: the weight and gradient arenas made by the caller (host memory of the CPU backend,
  // f32, param_set().total_local_numel() elements each, zeroed), used instead of allocating them:
  // ZeRO-1's node-shared arenas (parallel::NodeSharedArenas). Empty tensors: allocated here.
  // purpose kInference (a server's or generator's model): decode only. No gradient arena, no
  // backward scratch, no attention probabilities (B, NH, T, T) per layer and no logits gradient,
  // and the layers share one set of activations; forward, backward, zero_grad and grad() are
  // then refused. For GPT-2 124M at T = 1024 that is 1.84 GB less per rank (docs/PERF.md
  // "Serving").
  // activations: the precision of the activations a training model keeps for backward, kF32 or
  // kBF16 (train.dtype: bf16; ModelContext::act). Gradients, statistics, parameters and logits
  // stay fp32. bf16 needs Purpose::kTrain (decode runs fp32).
  struct Arenas {
    core::Tensor weights, grads;
  };
  enum class Purpose { kTrain, kInference };
  Gpt(const core::ModelConfig& model, int64_t B, int64_t T,
      parallel::Communicator* tp_comm = nullptr, backends::Backend* backend = nullptr,
      bool sequence_parallel = false, const Arenas& arenas = {}, Purpose purpose = Purpose::kTrain,
      core::DType activations = core::DType::kF32);
  ~Gpt();
  Gpt(const Gpt&) = delete;
  Gpt& operator=(const Gpt&) = delete;

  // The parameter table for `model` (global shapes and tp splits). Order is the registration
  // order the gradient reducer and checkpoints use: wte, wpe, 12 per layer, ln_f.
  static std::vector<params::ParamSpec> param_specs(const core::ModelConfig& model);

  const params::ParamSet& param_set() const { return params_; }
  // The arenas on the backend's device (host memory on the CPU backend).
  const core::Tensor& weights() const { return weights_; }
  const core::Tensor& grads() const { return grads_; }
  // Bytes of the activation arena (every module's activations and the shared scratch).
  int64_t activation_bytes() const { return static_cast<int64_t>(arena_.bytes()); }
  core::Tensor param(const std::string& name) const;  // view of this rank's shard
  core::Tensor grad(const std::string& name) const;
  // Fills the weights from the specs (a pure function of seed, name and global index).
  void init_weights(uint64_t seed);
  void zero_grad();

  // tokens, targets: (B_run, T_run) host arrays with B_run <= B, T_run <= T. targets may be null
  // (logits only). Returns the sum of per-token losses over targets >= 0 and sets *n_valid to
  // their count.
  double forward(const int32_t* tokens, const int32_t* targets, int64_t B_run, int64_t T_run,
                 int64_t* n_valid = nullptr);
  // After forward with targets, once: accumulates parameter gradients (+=) of loss_scale * sum of
  // per-token losses (loss_scale = 1 / tokens counted in the global mean). It overwrites the
  // logits with their gradient, so a second backward needs another forward. When on_ready is
  // given, it is called with each parameter's index as soon as that gradient is complete
  // (reverse layer order; the data-parallel reducer starts its buckets from it).
  // sparse_rows (host backends only; needs on_ready): the tied wte's gradient is split. Its
  // LM-head part is final right after the head's backward, so wte (index 0) is marked ready
  // then, first of all; the embedding lookup's part is not added to dwte but handed over as
  // rows: sparse_rows(wte index, row_ids (N), values (N, C), N) with N = B_run * T_run, row_ids
  // the tokens' rows of this rank's wte shard (-1 for tokens outside it), values the gradient
  // of the embedding's output (valid during the call). The caller adds them (GradientReducer's
  // add_sparse_rows).
  using SparseRowsHook =
      std::function<void(int param_index, const int32_t* row_ids, const float* values, int64_t n)>;
  void backward(float loss_scale, const std::function<void(int)>& on_ready = nullptr,
                const SparseRowsHook& sparse_rows = nullptr);

  // One decode step over N rows (host arrays): row i feeds token tokens[i] of the sequence in
  // cache slot slots[i] at position positions[i], appending its keys and values to `cache`.
  // Rows of one slot may share a call in increasing positions (a chunk of prefill); every
  // position below a row's must already be in the cache or earlier in the call. Each row's
  // position is made writable first (KvCache::make_writable: a fresh block when the slot's run
  // out, a private copy of a shared one); the cache's pool must have those blocks free.
  // N <= max_decode_rows().
  // Returns this rank's logits (N, Vp_local) on the device (valid until the next call). A row's
  // logits do not depend on the other rows. Collective over tp_comm.
  // head_rows (host, increasing, in [0, N)): the LM head runs on those n_head_rows rows only
  // (the rows a generator samples from; a prefill chunk's other rows need no logits), and the
  // logits are (n_head_rows, Vp_local), row m for row head_rows[m]; none when n_head_rows is 0.
  const float* decode(KvCache& cache, const int32_t* tokens, const int32_t* slots,
                      const int32_t* positions, int64_t N, const int64_t* head_rows = nullptr,
                      int64_t n_head_rows = 0);

  // logits of the last forward: (B_run, T_run, Vp_local) on the device, row stride Vp_local;
  // columns past the rank's real vocabulary are padding. backward overwrites them with their
  // gradient (the head's cross-entropy backward runs in place).
  const float* logits() const { return head_->logits(); }
  int64_t vocab_size() const { return V_; }
  int64_t padded_vocab_local() const { return Vp_local_; }
  int64_t vocab_start() const { return vocab_start_; }
  int64_t real_vocab_local() const { return V_real_local_; }
  int tp_rank() const { return tp_rank_; }
  int tp_size() const { return tp_size_; }
  parallel::Communicator& tp_comm() const { return *tp_comm_; }
  backends::Backend& backend() const { return backend_; }
  const core::ModelConfig& config() const { return model_; }
  int64_t max_batch() const { return B_; }
  int64_t max_seq() const { return T_; }
  // B * T, or B * T / tp when built sequence parallel (the residual stream's rows).
  int64_t max_decode_rows() const { return B_ * (T_ / seq_shards_); }
  // tp size when training calls run sequence parallel, else 1.
  int seq_shards() const { return seq_shards_; }
  bool inference_only() const { return ctx_.inference; }
  core::DType activation_dtype() const { return ctx_.act; }
  // Bytes this model allocated on its device: weights, gradients (none for inference) and the
  // activation arena (the KV cache is the caller's).
  int64_t allocated_bytes() const;

  // Forward+backward FLOPs per token at sequence length T (6N + attention, PaLM appendix B).
  static double flops_per_token(const core::ModelConfig& model, int64_t T);

  // Called after every linear layer's backward GEMMs (empty: never); the data-parallel reducer's
  // GradientReducer::poll, so started all-reduces move between a block's GEMMs too.
  void set_backward_poll(std::function<void()> poll) { backward_poll_ = std::move(poll); }
  void set_profiling(bool on) { backend_.set_profiling(on); }
  // Records backward per layer (and the head and embeddings) to `timeline` (nullptr: off).
  void set_timeline(parallel::Timeline* timeline) { timeline_ = timeline; }
  KernelTimes& kernel_times() { return backend_.kernel_times(); }

 private:
  // Copies n host int32s to a device buffer of this model.
  const int32_t* stage(core::Tensor& buffer, const int32_t* host, int64_t n);

  core::ModelConfig model_;
  int64_t B_, T_, C_, L_, V_, Vp_local_, vocab_start_, V_real_local_;
  backends::Backend& backend_;
  std::unique_ptr<parallel::Communicator> own_tp_comm_;  // size 1, when none was given
  parallel::Communicator* tp_comm_;
  int tp_rank_, tp_size_;
  int seq_shards_;  // tp_size_ under sequence parallelism (tp > 1), else 1
  params::ParamSet params_;
  core::Tensor weights_, grads_;
  ModelContext ctx_;

  // The modules, in forward order.
  BlockScratch scratch_;
  SequenceScratch seq_scratch_;  // allocated only when seq_shards_ > 1
  core::Tensor act_f32_;         // ModelContext::act_f32, (B*T, C): only with bf16 activations
  std::unique_ptr<VocabParallelEmbedding> embedding_;
  std::vector<std::unique_ptr<Block>> blocks_;
  std::unique_ptr<LayerNorm> ln_f_;
  std::unique_ptr<LmHead> head_;

  core::Tensor arena_;  // every module's activations and the shared scratch
  // (B*T_local, C) with T_local = T / seq_shards_:
  core::Tensor encoded_;    // the embedding's output, the first block's input (activations)
  core::Tensor lnf_out_;    // ln_f's output, the head's input (activations)
  core::Tensor dresidual_;  // gradient of the residual stream
  core::Tensor tokens_, targets_, slots_, positions_;  // (B*T) int32 on the device
  std::vector<int32_t>
      sparse_row_ids_;  // (B*T): the tokens' rows of the wte shard, for sparse_rows
  bool have_targets_ = false;
  Rows last_rows_;

  parallel::Timeline* timeline_ = nullptr;
  std::function<void()> backward_poll_;      // ctx_.backward_poll points here
  std::vector<std::string> backward_names_;  // "bwd h.<l>", made once (short: no allocation)
};

}  // namespace tessera::models
