// Autoregressive generation from a GPT: a KV cache (one sequence) that feeds one token at a time,
// and a full-recomputation path (the whole prefix through Gpt::forward) that the KV path is
// tested against. Streams each token to a callback as it is chosen.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "generate/sampler.h"
#include "models/gpt.h"

namespace tessera::generate {

struct GenerateOptions {
  SamplingOptions sampling;
  int max_tokens = 256;
  bool stop_at_eot = true;
  int32_t eot_token = -1;     // stop when sampled (not emitted)
  bool use_kv_cache = true;   // false: recompute the whole prefix each token (reference path)
};

class Generator {
 public:
  // `model` must be built with B >= 1 and T = model.max_seq_len (full recomputation needs it);
  // it is borrowed for the generator's lifetime. Allocates the KV cache once.
  explicit Generator(models::Gpt& model);
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  // Errors: empty prompt, prompt longer than the context, token ids outside the vocabulary.
  // Stops at max_tokens, at end-of-text, or when the context is full.
  core::Result<std::vector<int32_t>> generate(const std::vector<int32_t>& prompt,
                                              const GenerateOptions& options,
                                              const std::function<void(int32_t)>& on_token);

 private:
  // Feeds `token` at position `pos` through the KV path; returns logits (Vp) of that position.
  const float* step(int32_t token, int64_t pos);
  // Logits of the last position of `tokens` by full recomputation.
  const float* recompute(const std::vector<int32_t>& tokens);

  models::Gpt& model_;
  int64_t C_, L_, NH_, maxT_, Vp_;
  core::Tensor k_cache_, v_cache_;  // (L, maxT, C)
  core::Tensor x_, ln_, qkv_, atty_, proj_, fch_, fch_gelu_, mean_, rstd_, logits_, scratch_;
  std::vector<float> probs_;
  std::vector<int32_t> order_;
};

}  // namespace tessera::generate
