// KV-cache and full-recomputation generation; see generator.h.
#include "generate/generator.h"

#include <cstring>

#include "core/error.h"
#include "kernels/cpu/attention_decode.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gelu.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/residual.h"
#include "parallel/communicator.h"
#include "parallel/mappings.h"

namespace tessera::generate {

namespace kc = tessera::kernels::cpu;
using core::Tensor;

Generator::Generator(models::Gpt& model)
    : model_(model),
      C_(model.config().n_embd),
      Cl_(model.config().n_embd / model.tp_size()),
      L_(model.config().n_layer),
      NH_local_(model.config().n_head / model.tp_size()),
      maxT_(model.config().max_seq_len),
      Vp_local_(model.padded_vocab_local()) {
  TESSERA_ASSERT(model.max_seq() == maxT_,
                 "building a generator on a model sized for the full context");
  k_cache_ = Tensor::zeros({L_, maxT_, Cl_});
  v_cache_ = Tensor::zeros({L_, maxT_, Cl_});
  x_ = Tensor::zeros({C_});
  ln_ = Tensor::zeros({C_});
  qkv_ = Tensor::zeros({3 * Cl_});
  atty_ = Tensor::zeros({Cl_});
  proj_ = Tensor::zeros({C_});
  fch_ = Tensor::zeros({4 * Cl_});
  fch_gelu_ = Tensor::zeros({4 * Cl_});
  mean_ = Tensor::zeros({1});
  rstd_ = Tensor::zeros({1});
  logits_local_ = Tensor::zeros({Vp_local_});
  logits_ = Tensor::zeros({Vp_local_ * model.tp_size()});
  scratch_ = Tensor::zeros({maxT_});
}

const float* Generator::gather_logits(const float* local) {
  if (model_.tp_size() == 1) return local;
  model_.tp_comm()->all_gather(logits_.f32(), local, Vp_local_);
  return logits_.f32();
}

void Generator::reduce_and_bias(float* out, const float* bias) {
  if (model_.tp_size() > 1) parallel::reduce_from_tp_forward(*model_.tp_comm(), out, C_);
  kc::add_inplace(out, bias, C_);
}

const float* Generator::step(int32_t token, int64_t pos) {
  const int64_t C = C_, Cl = Cl_;
  float* x = x_.f32();
  // Vocab-parallel lookup: zeros outside this rank's rows, summed over tp.
  kc::embedding_forward(x, &token, model_.param("wte").f32(), int64_t{1}, C, model_.vocab_start(),
                        Vp_local_);
  if (model_.tp_size() > 1) parallel::reduce_from_tp_forward(*model_.tp_comm(), x, C);
  kc::add_inplace(x, model_.param("wpe").f32() + pos * C, C);
  for (int64_t l = 0; l < L_; ++l) {
    const std::string h = "h." + std::to_string(l);
    auto p = [&](const char* name) { return model_.param(h + name).f32(); };
    kc::layernorm_forward(ln_.f32(), mean_.f32(), rstd_.f32(), x, p(".ln_1.weight"),
                          p(".ln_1.bias"), int64_t{1}, C);
    // Column-parallel qkv: this rank's heads, laid out [q | k | v] of Cl columns each.
    kc::matmul_forward(qkv_.f32(), ln_.f32(), p(".attn.qkv.weight"), p(".attn.qkv.bias"),
                       int64_t{1}, C, 3 * Cl);
    float* k_row = k_cache_.f32() + (l * maxT_ + pos) * Cl;
    float* v_row = v_cache_.f32() + (l * maxT_ + pos) * Cl;
    std::memcpy(k_row, qkv_.f32() + Cl, Cl * sizeof(float));
    std::memcpy(v_row, qkv_.f32() + 2 * Cl, Cl * sizeof(float));
    kc::attention_decode(atty_.f32(), scratch_.f32(), qkv_.f32(), k_cache_.f32() + l * maxT_ * Cl,
                         v_cache_.f32() + l * maxT_ * Cl, pos + 1, Cl, NH_local_);
    kc::matmul_forward(proj_.f32(), atty_.f32(), p(".attn.proj.weight"),
                       static_cast<const float*>(nullptr), int64_t{1}, Cl, C);
    reduce_and_bias(proj_.f32(), p(".attn.proj.bias"));
    kc::add_inplace(x, proj_.f32(), C);
    kc::layernorm_forward(ln_.f32(), mean_.f32(), rstd_.f32(), x, p(".ln_2.weight"),
                          p(".ln_2.bias"), int64_t{1}, C);
    kc::matmul_forward(fch_.f32(), ln_.f32(), p(".mlp.fc.weight"), p(".mlp.fc.bias"), int64_t{1}, C,
                       4 * Cl);
    kc::gelu_forward(fch_gelu_.f32(), fch_.f32(), 4 * Cl);
    kc::matmul_forward(proj_.f32(), fch_gelu_.f32(), p(".mlp.proj.weight"),
                       static_cast<const float*>(nullptr), int64_t{1}, 4 * Cl, C);
    reduce_and_bias(proj_.f32(), p(".mlp.proj.bias"));
    kc::add_inplace(x, proj_.f32(), C);
  }
  kc::layernorm_forward(ln_.f32(), mean_.f32(), rstd_.f32(), x, model_.param("ln_f.weight").f32(),
                        model_.param("ln_f.bias").f32(), int64_t{1}, C);
  kc::matmul_forward(logits_local_.f32(), ln_.f32(), model_.param("wte").f32(),
                     static_cast<const float*>(nullptr), int64_t{1}, C, Vp_local_);
  return gather_logits(logits_local_.f32());
}

const float* Generator::recompute(const std::vector<int32_t>& tokens) {
  const int64_t T = static_cast<int64_t>(tokens.size());
  model_.forward(tokens.data(), nullptr, 1, T);
  return gather_logits(model_.logits() + (T - 1) * Vp_local_);
}

core::Result<std::vector<int32_t>> Generator::generate(
    const std::vector<int32_t>& prompt, const GenerateOptions& o,
    const std::function<void(int32_t)>& on_token) {
  const int64_t V = model_.vocab_size();
  if (prompt.empty()) {
    return core::Status::error("the prompt is empty; give at least one token of text");
  }
  if (static_cast<int64_t>(prompt.size()) >= maxT_) {
    return core::Status::error("the prompt is " + std::to_string(prompt.size()) +
                               " tokens, the model's context (model.max_seq_len) is " +
                               std::to_string(maxT_) +
                               " and at least one position must remain; "
                               "shorten the prompt");
  }
  for (int32_t t : prompt) {
    if (t < 0 || t >= V) {
      return core::Status::error("prompt token id " + std::to_string(t) +
                                 " is outside the vocabulary (" + std::to_string(V) +
                                 "); use the tokenizer the model was trained with");
    }
  }
  std::vector<int32_t> seq = prompt;
  std::vector<int32_t> out;
  const float* logits = nullptr;
  if (o.use_kv_cache) {
    for (size_t i = 0; i < prompt.size(); ++i) logits = step(prompt[i], static_cast<int64_t>(i));
  } else {
    logits = recompute(seq);
  }
  for (int n = 0; n < o.max_tokens; ++n) {
    const int32_t next = sample_token(logits, V, o.sampling, n, probs_, order_);
    if (o.stop_at_eot && next == o.eot_token) break;
    out.push_back(next);
    seq.push_back(next);
    if (on_token) on_token(next);
    if (static_cast<int64_t>(seq.size()) >= maxT_) break;  // the context is full
    logits = o.use_kv_cache ? step(next, static_cast<int64_t>(seq.size()) - 1) : recompute(seq);
  }
  return out;
}

}  // namespace tessera::generate
