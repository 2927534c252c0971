// GPT-2 forward and backward over the CPU kernels. Shapes in comments are per rank.
#include "models/gpt.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "core/error.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/crossentropy.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gelu.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/residual.h"
#include "parallel/communicator.h"
#include "parallel/mappings.h"
#include "parallel/timeline.h"

namespace tessera::models {

namespace kc = tessera::kernels::cpu;
using core::Tensor;

namespace {
// Adds elapsed seconds to a KernelTimes field when profiling.
class Scope {
 public:
  Scope(bool on, double* slot) : slot_(on ? slot : nullptr), t0_(on ? omp_get_wtime() : 0) {}
  ~Scope() {
    if (slot_) *slot_ += omp_get_wtime() - t0_;
  }

 private:
  double* slot_;
  double t0_;
};
}  // namespace

std::vector<ParamSpec> Gpt::param_specs(const core::ModelConfig& m) {
  const int64_t C = m.n_embd, V = m.vocab_size, Vp = m.padded_vocab_size();
  const float std = static_cast<float>(m.init_std);
  // Residual projections are scaled by 1/sqrt(2L) (GPT-2 paper, section 2.3).
  const float proj_std = static_cast<float>(m.init_std / std::sqrt(2.0 * m.n_layer));
  std::vector<ParamSpec> s;
  auto ln = [&](const std::string& name) {
    s.push_back({name + ".weight", {C}, -1, 1, Init::kOnes, 0, -1, false});
    s.push_back({name + ".bias", {C}, -1, 1, Init::kZeros, 0, -1, false});
  };
  // Token embedding: vocab-parallel rows; padding rows are zero and never reach the loss.
  s.push_back({"wte", {Vp, C}, 0, 1, Init::kNormal, std, V, true});
  s.push_back({"wpe", {m.max_seq_len, C}, -1, 1, Init::kNormal, std, -1, true});
  for (int l = 0; l < m.n_layer; ++l) {
    const std::string h = "h." + std::to_string(l);
    ln(h + ".ln_1");
    // Column-parallel fused qkv: three blocks (q, k, v), each split over tp by heads.
    s.push_back({h + ".attn.qkv.weight", {3 * C, C}, 0, 3, Init::kNormal, std, -1, true});
    s.push_back({h + ".attn.qkv.bias", {3 * C}, 0, 3, Init::kZeros, 0, -1, false});
    // Row-parallel output projection: input dim split; bias replicated (added after the reduce).
    s.push_back({h + ".attn.proj.weight", {C, C}, 1, 1, Init::kNormal, proj_std, -1, true});
    s.push_back({h + ".attn.proj.bias", {C}, -1, 1, Init::kZeros, 0, -1, false});
    ln(h + ".ln_2");
    s.push_back({h + ".mlp.fc.weight", {4 * C, C}, 0, 1, Init::kNormal, std, -1, true});
    s.push_back({h + ".mlp.fc.bias", {4 * C}, 0, 1, Init::kZeros, 0, -1, false});
    s.push_back({h + ".mlp.proj.weight", {C, 4 * C}, 1, 1, Init::kNormal, proj_std, -1, true});
    s.push_back({h + ".mlp.proj.bias", {C}, -1, 1, Init::kZeros, 0, -1, false});
  }
  ln("ln_f");
  return s;
}

double Gpt::flops_per_token(const core::ModelConfig& m, int64_t T) {
  // 6 FLOPs per parameter per token (forward 2, backward 4) over the non-embedding-lookup
  // parameters (the tied LM head is a real GEMM, so wte counts), plus attention scores and
  // values: 6 * 2 * L * C * T (PaLM, Chowdhery et al. 2022, appendix B).
  const double C = m.n_embd, L = m.n_layer, Vp = m.padded_vocab_size();
  const double per_layer = 12.0 * C * C + 13.0 * C;  // qkv, proj, fc, proj weights + biases + LNs
  const double n = L * per_layer + Vp * C;
  return 6.0 * n + 12.0 * L * C * static_cast<double>(T);
}

namespace {
int comm_rank(parallel::Communicator* c) { return c ? c->rank() : 0; }
int comm_size(parallel::Communicator* c) { return c ? c->size() : 1; }
}  // namespace

Gpt::Gpt(const core::ModelConfig& model, int64_t B, int64_t T, parallel::Communicator* tp_comm)
    : Gpt(model, B, T, tp_comm, comm_rank(tp_comm), comm_size(tp_comm)) {}

Gpt::Gpt(const core::ModelConfig& model, int64_t B, int64_t T, parallel::Communicator* tp_comm,
         int tp_rank, int tp_size)
    : model_(model),
      B_(B),
      T_(T),
      C_(model.n_embd),
      NH_local_(model.n_head / tp_size),
      L_(model.n_layer),
      V_(model.vocab_size),
      Vp_local_(model.padded_vocab_size() / tp_size),
      vocab_start_(static_cast<int64_t>(tp_rank) * (model.padded_vocab_size() / tp_size)),
      V_real_local_(std::clamp<int64_t>(model.vocab_size - vocab_start_, 0, Vp_local_)),
      tp_comm_(tp_comm),
      tp_rank_(tp_rank),
      tp_size_(tp_size),
      params_(param_specs(model), tp_rank, tp_size) {
  TESSERA_ASSERT(T <= model.max_seq_len, "building a GPT with T <= model.max_seq_len");
  weights_ = params_.make_twin();
  grads_ = params_.make_twin();

  const int64_t BT = B * T, C = C_, C3l = 3 * C / tp_size, Cl = C / tp_size, C4l = 4 * C / tp_size;
  const int64_t NHl = NH_local_;
  // One arena for every activation; each view's size is listed once here.
  std::vector<std::pair<Tensor*, core::Shape>> plan;
  acts_.resize(L_);
  plan.push_back({&encoded_, {B, T, C}});
  for (LayerActs& a : acts_) {
    plan.insert(plan.end(), {{&a.ln1, {BT, C}},
                             {&a.ln1_mean, {BT}},
                             {&a.ln1_rstd, {BT}},
                             {&a.qkv, {BT, C3l}},
                             {&a.atty, {BT, Cl}},
                             {&a.att, {B, NHl, T, T}},
                             {&a.attproj, {BT, C}},
                             {&a.residual2, {BT, C}},
                             {&a.ln2, {BT, C}},
                             {&a.ln2_mean, {BT}},
                             {&a.ln2_rstd, {BT}},
                             {&a.fch, {BT, C4l}},
                             {&a.fch_gelu, {BT, C4l}},
                             {&a.fcproj, {BT, C}},
                             {&a.residual3, {BT, C}}});
  }
  plan.insert(plan.end(), {{&lnf_, {BT, C}},
                           {&lnf_mean_, {BT}},
                           {&lnf_rstd_, {BT}},
                           {&logits_, {BT, Vp_local_}},
                           {&losses_, {BT}},
                           {&row_max_, {BT}},
                           {&xent_sums_, {2, BT}},
                           {&attn_workspace_, {kc::attention_workspace_size(B, T, Cl, NHl)}},
                           {&dlogits_, {BT, Vp_local_}},
                           {&dlosses_, {BT}},
                           {&dresidual_, {BT, C}},
                           {&dln_, {BT, C}},
                           {&dqkv_, {BT, C3l}},
                           {&datty_, {BT, Cl}},
                           {&dfch_, {BT, C4l}},
                           {&dfch_gelu_, {BT, C4l}}});
  int64_t total = 0;
  for (auto& [t, shape] : plan) total += (core::shape_numel(shape) + 15) / 16 * 16;
  arena_ = Tensor::zeros({total});
  int64_t off = 0;
  for (auto& [t, shape] : plan) {
    *t = arena_.view(off, shape);
    off += (core::shape_numel(shape) + 15) / 16 * 16;
  }
  for (int l = 0; l < L_; ++l) backward_names_.push_back("bwd h." + std::to_string(l));
  sumexp_ = xent_sums_.view(0, {BT});
  target_logit_ = xent_sums_.view(BT, {BT});
  tokens_ = Tensor::zeros({B, T}, core::DType::kI32);
  targets_ = Tensor::zeros({B, T}, core::DType::kI32);
}

void Gpt::reduce_from_tp(float* x, int64_t count) {
  if (tp_size_ > 1) parallel::reduce_from_tp_forward(*tp_comm_, x, count);
}

void Gpt::copy_to_tp_backward(float* dx, int64_t count) {
  if (tp_size_ > 1) parallel::copy_to_tp_backward(*tp_comm_, dx, count);
}

Tensor Gpt::param(const std::string& name) const {
  const int i = params_.index_of(name);
  TESSERA_ASSERT(i >= 0, ("looking up parameter " + name).c_str());
  return params_.view(weights_, i);
}

Tensor Gpt::grad(const std::string& name) const {
  const int i = params_.index_of(name);
  TESSERA_ASSERT(i >= 0, ("looking up gradient " + name).c_str());
  return params_.view(grads_, i);
}

Gpt::LayerParams Gpt::layer_params(const Tensor& arena, int l) const {
  // Specs are laid out: wte, wpe, then 12 per layer, then ln_f (see param_specs).
  const int base = 2 + 12 * l;
  auto p = [&](int k) { return params_.view(arena, base + k).f32(); };
  return {p(0), p(1), p(2), p(3), p(4), p(5), p(6), p(7), p(8), p(9), p(10), p(11)};
}

double Gpt::forward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                    int64_t* n_valid) {
  TESSERA_ASSERT(B <= B_ && T <= T_, "running GPT forward within the allocated B and T");
  const int64_t BT = B * T, C = C_, Cl = C / tp_size_, C3l = 3 * Cl, C4l = 4 * Cl;
  std::memcpy(tokens_.raw(), tokens, BT * sizeof(int32_t));
  have_targets_ = targets != nullptr;
  if (have_targets_) std::memcpy(targets_.raw(), targets, BT * sizeof(int32_t));
  last_B_ = B;
  last_T_ = T;
  const int32_t* tok = tokens_.data<int32_t>();
  float* wte = params_.view(weights_, 0).f32();
  float* wpe = params_.view(weights_, 1).f32();

  float* x = encoded_.f32();  // (B, T, C)
  {
    Scope s(profiling_, &times_.embedding);
    // Vocab-parallel embedding: each rank looks up the tokens in its rows (zeros elsewhere);
    // the sum over tp is the full lookup. Positions are added once, after the sum.
    kc::embedding_forward(x, tok, wte, BT, C, vocab_start_, Vp_local_);
    reduce_from_tp(x, BT * C);
    kc::positional_forward(x, wpe, B, T, C);
  }
  for (int l = 0; l < L_; ++l) {
    LayerActs& a = acts_[l];
    const LayerParams w = layer_params(weights_, l);
    {
      Scope s(profiling_, &times_.layernorm);
      kc::layernorm_forward(a.ln1.f32(), a.ln1_mean.f32(), a.ln1_rstd.f32(), x, w.ln1w, w.ln1b, BT,
                            C);
    }
    {
      Scope s(profiling_, &times_.matmul);
      kc::matmul_forward(a.qkv.f32(), a.ln1.f32(), w.qkvw, w.qkvb, BT, C, C3l);
    }
    {
      Scope s(profiling_, &times_.attention);
      kc::attention_forward(a.atty.f32(), a.att.f32(), attn_workspace_.f32(), a.qkv.f32(), B, T, Cl,
                            NH_local_);
    }
    {
      Scope s(profiling_, &times_.matmul);
      // Row-parallel: partial sums over this rank's heads, summed over tp, then the bias once.
      kc::matmul_forward(a.attproj.f32(), a.atty.f32(), w.projw, tp_size_ == 1 ? w.projb : nullptr,
                         BT, Cl, C);
      reduce_from_tp(a.attproj.f32(), BT * C);
      if (tp_size_ > 1) kc::add_bias(a.attproj.f32(), w.projb, BT, C);
    }
    {
      Scope s(profiling_, &times_.other);
      kc::residual_forward(a.residual2.f32(), x, a.attproj.f32(), BT * C);
    }
    {
      Scope s(profiling_, &times_.layernorm);
      kc::layernorm_forward(a.ln2.f32(), a.ln2_mean.f32(), a.ln2_rstd.f32(), a.residual2.f32(),
                            w.ln2w, w.ln2b, BT, C);
    }
    {
      Scope s(profiling_, &times_.matmul);
      kc::matmul_forward(a.fch.f32(), a.ln2.f32(), w.fcw, w.fcb, BT, C, C4l);
    }
    {
      Scope s(profiling_, &times_.gelu);
      kc::gelu_forward(a.fch_gelu.f32(), a.fch.f32(), BT * C4l);
    }
    {
      Scope s(profiling_, &times_.matmul);
      kc::matmul_forward(a.fcproj.f32(), a.fch_gelu.f32(), w.fcprojw,
                         tp_size_ == 1 ? w.fcprojb : nullptr, BT, C4l, C);
      reduce_from_tp(a.fcproj.f32(), BT * C);
      if (tp_size_ > 1) kc::add_bias(a.fcproj.f32(), w.fcprojb, BT, C);
    }
    {
      Scope s(profiling_, &times_.other);
      kc::residual_forward(a.residual3.f32(), a.residual2.f32(), a.fcproj.f32(), BT * C);
    }
    x = a.residual3.f32();
  }
  const int nparams = params_.size();
  float* lnfw = params_.view(weights_, nparams - 2).f32();
  float* lnfb = params_.view(weights_, nparams - 1).f32();
  {
    Scope s(profiling_, &times_.layernorm);
    kc::layernorm_forward(lnf_.f32(), lnf_mean_.f32(), lnf_rstd_.f32(), x, lnfw, lnfb, BT, C);
  }
  {
    // Tied LM head: logits (BT, Vp_local) = lnf (BT, C) · wte_local (Vp_local, C)^T.
    Scope s(profiling_, &times_.matmul);
    kc::matmul_forward(logits_.f32(), lnf_.f32(), wte, static_cast<const float*>(nullptr), BT, C,
                       Vp_local_);
  }
  if (!have_targets_) return 0.0;

  Scope s(profiling_, &times_.xent);
  const int32_t* tgt = targets_.data<int32_t>();
  // Vocab-parallel cross-entropy: the row max, then the sums of exponentials and the target
  // logit, are reduced over tp between the passes; full logits never exist on one rank.
  kc::xent_row_max(row_max_.f32(), logits_.f32(), BT, V_real_local_, Vp_local_);
  if (tp_size_ > 1) tp_comm_->all_reduce_max(row_max_.f32(), BT);
  kc::xent_row_sumexp_target(sumexp_.f32(), target_logit_.f32(), logits_.f32(), tgt, row_max_.f32(),
                             BT, V_real_local_, Vp_local_, vocab_start_);
  if (tp_size_ > 1) tp_comm_->all_reduce_sum(xent_sums_.f32(), 2 * BT);
  kc::xent_loss(losses_.f32(), row_max_.f32(), sumexp_.f32(), target_logit_.f32(), tgt, BT);
  double sum = 0;
  int64_t count = 0;
  const float* losses = losses_.f32();
  for (int64_t n = 0; n < BT; ++n) {
    if (tgt[n] >= 0) {
      sum += losses[n];
      ++count;
    }
  }
  if (n_valid) *n_valid = count;
  return sum;
}

void Gpt::backward(float loss_scale, const std::function<void(int)>& on_ready) {
  TESSERA_ASSERT(have_targets_, "running GPT backward after a forward with targets");
  const int64_t B = last_B_, T = last_T_, BT = B * T, C = C_, Cl = C / tp_size_, C3l = 3 * Cl,
                C4l = 4 * Cl;
  const int32_t* tok = tokens_.data<int32_t>();
  const int32_t* tgt = targets_.data<int32_t>();
  float* dlosses = dlosses_.f32();
  for (int64_t n = 0; n < BT; ++n) dlosses[n] = loss_scale;
  const int nparams = params_.size();
  float* wte = params_.view(weights_, 0).f32();
  float* dwte = params_.view(grads_, 0).f32();
  float* dwpe = params_.view(grads_, 1).f32();
  // The loss, LM head and final layernorm, as one timeline event.
  std::optional<parallel::Timeline::Scope> head_scope;
  if (timeline_) head_scope.emplace(timeline_, "bwd head", "backward");
  {
    Scope s(profiling_, &times_.xent);
    // dlogits (BT, Vp_local) = (softmax - onehot) * dloss; padding columns 0.
    kc::xent_backward(dlogits_.f32(), logits_.f32(), tgt, row_max_.f32(), sumexp_.f32(), dlosses,
                      BT, V_real_local_, Vp_local_, vocab_start_);
  }
  {
    // LM head: dlnf = dlogits · wte_local (all-reduce over tp with tp > 1); dwte += dlogits^T lnf.
    Scope s(profiling_, &times_.matmul);
    kc::matmul_backward(dln_.f32(), dwte, static_cast<float*>(nullptr), dlogits_.f32(), lnf_.f32(),
                        wte, BT, C, Vp_local_);
    copy_to_tp_backward(dln_.f32(), BT * C);
  }
  const float* x_last = L_ > 0 ? acts_[L_ - 1].residual3.f32() : encoded_.f32();
  {
    Scope s(profiling_, &times_.layernorm);
    dresidual_.zero_();
    kc::layernorm_backward(dresidual_.f32(), params_.view(grads_, nparams - 2).f32(),
                           params_.view(grads_, nparams - 1).f32(), dln_.f32(), x_last,
                           params_.view(weights_, nparams - 2).f32(), lnf_mean_.f32(),
                           lnf_rstd_.f32(), BT, C);
  }
  head_scope.reset();
  if (on_ready) {
    on_ready(nparams - 1);
    on_ready(nparams - 2);
  }
  float* dres = dresidual_.f32();  // gradient of the residual stream, (BT, C); accumulates
  for (int l = L_ - 1; l >= 0; --l) {
    LayerActs& a = acts_[l];
    const LayerParams w = layer_params(weights_, l);
    const LayerParams g = layer_params(grads_, l);
    const float* x_in = l > 0 ? acts_[l - 1].residual3.f32() : encoded_.f32();
    std::optional<parallel::Timeline::Scope> layer_scope;
    if (timeline_) layer_scope.emplace(timeline_, backward_names_[l], "backward");
    // residual3 = residual2 + fcproj: dfcproj = dres; dres flows on to residual2 unchanged.
    {
      Scope s(profiling_, &times_.matmul);
      kc::matmul_backward(dfch_gelu_.f32(), g.fcprojw, g.fcprojb, dres, a.fch_gelu.f32(), w.fcprojw,
                          BT, C4l, C);
    }
    {
      Scope s(profiling_, &times_.gelu);
      kc::gelu_backward(dfch_.f32(), a.fch.f32(), dfch_gelu_.f32(), BT * C4l);
    }
    {
      Scope s(profiling_, &times_.matmul);
      kc::matmul_backward(dln_.f32(), g.fcw, g.fcb, dfch_.f32(), a.ln2.f32(), w.fcw, BT, C, C4l);
      copy_to_tp_backward(dln_.f32(), BT * C);
    }
    {
      Scope s(profiling_, &times_.layernorm);
      kc::layernorm_backward(dres, g.ln2w, g.ln2b, dln_.f32(), a.residual2.f32(), w.ln2w,
                             a.ln2_mean.f32(), a.ln2_rstd.f32(), BT, C);
    }
    // residual2 = x_in + attproj.
    {
      Scope s(profiling_, &times_.matmul);
      kc::matmul_backward(datty_.f32(), g.projw, g.projb, dres, a.atty.f32(), w.projw, BT, Cl, C);
    }
    {
      Scope s(profiling_, &times_.attention);
      kc::attention_backward(dqkv_.f32(), attn_workspace_.f32(), datty_.f32(), a.qkv.f32(),
                             a.att.f32(), B, T, Cl, NH_local_);
    }
    {
      Scope s(profiling_, &times_.matmul);
      kc::matmul_backward(dln_.f32(), g.qkvw, g.qkvb, dqkv_.f32(), a.ln1.f32(), w.qkvw, BT, C, C3l);
      copy_to_tp_backward(dln_.f32(), BT * C);
    }
    {
      Scope s(profiling_, &times_.layernorm);
      kc::layernorm_backward(dres, g.ln1w, g.ln1b, dln_.f32(), x_in, w.ln1w, a.ln1_mean.f32(),
                             a.ln1_rstd.f32(), BT, C);
    }
    layer_scope.reset();
    if (on_ready) {
      for (int k = 11; k >= 0; --k) on_ready(2 + 12 * l + k);
    }
  }
  {
    // dres is the full (tp-replicated) gradient of the embedding output: each rank scatters it
    // into its own vocabulary rows.
    Scope s(profiling_, &times_.embedding);
    std::optional<parallel::Timeline::Scope> embed_scope;
    if (timeline_) embed_scope.emplace(timeline_, "bwd embed", "backward");
    kc::embedding_backward(dwte, dres, tok, BT, C, vocab_start_, Vp_local_);
    kc::positional_backward(dwpe, dres, B, T, C);
  }
  if (on_ready) {
    on_ready(1);
    on_ready(0);
  }
}

}  // namespace tessera::models
