// GPT-2 family model (Radford et al. 2019): learned positions, pre-LayerNorm blocks, GELU MLP of
// 4C, tied embedding / LM head, biases, vocabulary padded to a config multiple. Explicit forward
// and backward (llm.c style), activations in one arena sized at construction: the step loop never
// allocates. Tensor parallel (Megatron-LM): vocabulary-parallel embedding, LM head and
// cross-entropy; attention heads and the MLP's hidden units split over tp (column-parallel qkv and
// fc, row-parallel projections). Sizes are per rank (`_local`).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/tensor.h"
#include "models/param_spec.h"

namespace tessera::parallel {
class Communicator;
class Timeline;
}  // namespace tessera::parallel

namespace tessera::models {

// Seconds spent per kernel family, filled when profiling is on (bench/ reports them).
struct KernelTimes {
  double matmul = 0, attention = 0, layernorm = 0, gelu = 0, xent = 0, embedding = 0, other = 0;
  double total() const { return matmul + attention + layernorm + gelu + xent + embedding + other; }
};

class Gpt {
 public:
  // Allocates this rank's parameter shard, its gradient twin and activations for micro-batches
  // of up to B sequences of up to T tokens. tp_comm: the tensor-parallel group (nullptr: tp = 1);
  // borrowed for the model's lifetime. Preconditions: config validated, T <= max_seq_len, grid
  // checked (parallel::check_grid). forward and backward are collectives over tp_comm.
  Gpt(const core::ModelConfig& model, int64_t B, int64_t T,
      parallel::Communicator* tp_comm = nullptr);
  Gpt(const Gpt&) = delete;
  Gpt& operator=(const Gpt&) = delete;

  // The parameter table for `model` (global shapes and tp splits). Order is the registration
  // order the gradient reducer and checkpoints use.
  static std::vector<ParamSpec> param_specs(const core::ModelConfig& model);

  const ParamSet& param_set() const { return params_; }
  const core::Tensor& weights() const { return weights_; }
  const core::Tensor& grads() const { return grads_; }
  core::Tensor param(
      const std::string& name) const;  // view of this rank's shard; asserts it exists
  core::Tensor grad(const std::string& name) const;
  void init_weights(uint64_t seed) { params_.initialise(weights_, seed); }
  void zero_grad() { grads_.zero_(); }

  // tokens, targets: (B_run, T_run) with B_run <= B, T_run <= T. targets may be null (logits only).
  // Returns the sum of per-token losses over targets >= 0 and sets *n_valid to their count.
  double forward(const int32_t* tokens, const int32_t* targets, int64_t B_run, int64_t T_run,
                 int64_t* n_valid = nullptr);
  // After forward with targets: accumulates parameter gradients (+=) of loss_scale * sum of
  // per-token losses (loss_scale = 1 / tokens counted in the global mean). When on_ready is
  // given, it is called with each parameter's index as soon as that gradient is complete
  // (reverse layer order; the data-parallel reducer starts its buckets from it).
  void backward(float loss_scale, const std::function<void(int)>& on_ready = nullptr);

  // logits of the last forward: (B_run, T_run, Vp_local), row stride Vp_local; columns past the
  // rank's real vocabulary are padding.
  const float* logits() const { return logits_.f32(); }
  int64_t vocab_size() const { return V_; }
  int64_t padded_vocab_local() const { return Vp_local_; }
  int64_t vocab_start() const { return vocab_start_; }
  int64_t real_vocab_local() const { return V_real_local_; }
  int tp_rank() const { return tp_rank_; }
  int tp_size() const { return tp_size_; }
  parallel::Communicator* tp_comm() const { return tp_comm_; }
  const core::ModelConfig& config() const { return model_; }
  int64_t max_batch() const { return B_; }
  int64_t max_seq() const { return T_; }

  // Forward+backward FLOPs per token at sequence length T (6N + attention, PaLM appendix B).
  static double flops_per_token(const core::ModelConfig& model, int64_t T);

  void set_profiling(bool on) { profiling_ = on; }
  // Records backward per layer (and the head and embeddings) to `timeline` (nullptr: off).
  void set_timeline(parallel::Timeline* timeline) { timeline_ = timeline; }
  KernelTimes& kernel_times() { return times_; }

 private:
  struct LayerActs {
    core::Tensor ln1, ln1_mean, ln1_rstd, qkv, atty, att, attproj, residual2;
    core::Tensor ln2, ln2_mean, ln2_rstd, fch, fch_gelu, fcproj, residual3;
  };
  struct LayerParams {
    float *ln1w, *ln1b, *qkvw, *qkvb, *projw, *projb, *ln2w, *ln2b, *fcw, *fcb, *fcprojw, *fcprojb;
  };
  LayerParams layer_params(const core::Tensor& arena, int l) const;
  Gpt(const core::ModelConfig& model, int64_t B, int64_t T, parallel::Communicator* tp_comm,
      int tp_rank, int tp_size);
  // The tp mappings (no-ops at tp = 1); see parallel/mappings.h.
  void reduce_from_tp(float* x, int64_t count);
  void copy_to_tp_backward(float* dx, int64_t count);

  core::ModelConfig model_;
  int64_t B_, T_, C_, NH_local_, L_, V_, Vp_local_, vocab_start_, V_real_local_;
  parallel::Communicator* tp_comm_;
  int tp_rank_, tp_size_;
  ParamSet params_;
  core::Tensor weights_, grads_;

  // Activations (all sized for B_ x T_).
  core::Tensor arena_;
  core::Tensor encoded_;
  std::vector<LayerActs> acts_;
  core::Tensor lnf_, lnf_mean_, lnf_rstd_, logits_, losses_, row_max_;
  core::Tensor xent_sums_, sumexp_, target_logit_;  // sumexp and target_logit: views of xent_sums_
  core::Tensor attn_workspace_;
  // Backward scratch.
  core::Tensor dlogits_, dlosses_, dresidual_, dln_, dqkv_, datty_, dfch_, dfch_gelu_;
  core::Tensor tokens_, targets_;  // copies of the last forward's inputs (B_, T_) i32
  bool have_targets_ = false;
  int64_t last_B_ = 0, last_T_ = 0;

  bool profiling_ = false;
  parallel::Timeline* timeline_ = nullptr;
  std::vector<std::string> backward_names_;  // "bwd h.<l>", made once (short: no allocation)
  KernelTimes times_;
};

}  // namespace tessera::models
