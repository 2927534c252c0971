// GPT-2 family model (Radford et al. 2019): learned positions, pre-LayerNorm blocks, GELU MLP of
// 4C, tied embedding / LM head, biases, vocabulary padded to a config multiple. Explicit forward
// and backward (llm.c style), activations in one arena sized at construction: the step loop never
// allocates. Sizes are per rank (`_local` over tp); tp=1 until the grid issue adds communicators.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/tensor.h"
#include "models/param_spec.h"

namespace tessera::models {

// Seconds spent per kernel family, filled when profiling is on (bench/ reports them).
struct KernelTimes {
  double matmul = 0, attention = 0, layernorm = 0, gelu = 0, xent = 0, embedding = 0, other = 0;
  double total() const { return matmul + attention + layernorm + gelu + xent + embedding + other; }
};

class Gpt {
 public:
  // Allocates this rank's parameter shard, its gradient twin and activations for micro-batches
  // of up to B sequences of up to T tokens. Precondition: config validated, T <= max_seq_len.
  Gpt(const core::ModelConfig& model, int64_t B, int64_t T, int tp_rank = 0, int tp_size = 1);
  Gpt(const Gpt&) = delete;
  Gpt& operator=(const Gpt&) = delete;

  // The parameter table for `model` (global shapes and tp splits). Order is the registration
  // order the gradient reducer and checkpoints use.
  static std::vector<ParamSpec> param_specs(const core::ModelConfig& model);

  const ParamSet& param_set() const { return params_; }
  const core::Tensor& weights() const { return weights_; }
  const core::Tensor& grads() const { return grads_; }
  core::Tensor param(const std::string& name) const;  // view of this rank's shard; asserts it exists
  core::Tensor grad(const std::string& name) const;
  void init_weights(uint64_t seed) { params_.initialise(weights_, seed); }
  void zero_grad() { grads_.zero_(); }

  // tokens, targets: (B_run, T_run) with B_run <= B, T_run <= T. targets may be null (logits only).
  // Returns the sum of per-token losses over targets >= 0 and sets *n_valid to their count.
  double forward(const int32_t* tokens, const int32_t* targets, int64_t B_run, int64_t T_run,
                 int64_t* n_valid = nullptr);
  // After forward with targets: accumulates parameter gradients (+=) of loss_scale * sum of
  // per-token losses (loss_scale = 1 / tokens counted in the global mean).
  void backward(float loss_scale);

  // logits of the last forward: (B_run, T_run, Vp_local), row stride Vp_local; columns past the
  // rank's real vocabulary are padding.
  const float* logits() const { return logits_.f32(); }
  int64_t vocab_size() const { return V_; }
  int64_t padded_vocab_local() const { return Vp_local_; }
  int64_t vocab_start() const { return vocab_start_; }
  int64_t real_vocab_local() const { return V_real_local_; }
  const core::ModelConfig& config() const { return model_; }
  int64_t max_batch() const { return B_; }
  int64_t max_seq() const { return T_; }

  // Forward+backward FLOPs per token at sequence length T (6N + attention, PaLM appendix B).
  static double flops_per_token(const core::ModelConfig& model, int64_t T);

  void set_profiling(bool on) { profiling_ = on; }
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

  core::ModelConfig model_;
  int64_t B_, T_, C_, NH_local_, L_, V_, Vp_local_, vocab_start_, V_real_local_;
  int tp_rank_, tp_size_;
  ParamSet params_;
  core::Tensor weights_, grads_;

  // Activations (all sized for B_ x T_).
  core::Tensor arena_;
  core::Tensor encoded_;
  std::vector<LayerActs> acts_;
  core::Tensor lnf_, lnf_mean_, lnf_rstd_, logits_, losses_, row_max_, sumexp_, target_logit_;
  core::Tensor attn_workspace_;
  // Backward scratch.
  core::Tensor dlogits_, dlosses_, dresidual_, dln_, dqkv_, datty_, dfch_, dfch_gelu_;
  core::Tensor tokens_, targets_;  // copies of the last forward's inputs (B_, T_) i32
  bool have_targets_ = false;
  int64_t last_B_ = 0, last_T_ = 0;

  bool profiling_ = false;
  KernelTimes times_;
};

}  // namespace tessera::models
