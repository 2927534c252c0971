// Autoregressive generation from a GPT: a KV cache (one sequence) that feeds one token at a time,
// and a full-recomputation path (the whole prefix through Gpt::forward) that the KV path is
// tested against. Streams each token to a callback as it is chosen. With tensor parallelism the
// heads, the MLP and the vocabulary stay split; each rank's logits are gathered over tp and every
// rank samples the same token from the same counter RNG, so tp = N emits the tokens of tp = 1.
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
  int32_t eot_token = -1;    // stop when sampled (not emitted)
  bool use_kv_cache = true;  // false: recompute the whole prefix each token (reference path)
};

class Generator {
 public:
  // `model` must be built with B >= 1 and T = model.max_seq_len (full recomputation needs it);
  // it is borrowed for the generator's lifetime. Allocates the KV cache once. With tp > 1,
  // generate() is a collective over the model's tp_comm.
  explicit Generator(models::Gpt& model);
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  // Errors: empty prompt, prompt longer than the context, token ids outside the vocabulary.
  // Stops at max_tokens, at end-of-text, or when the context is full.
  core::Result<std::vector<int32_t>> generate(const std::vector<int32_t>& prompt,
                                              const GenerateOptions& options,
                                              const std::function<void(int32_t)>& on_token);

 private:
  // Feeds `token` at position `pos` through the KV path; returns the gathered logits (Vp).
  const float* step(int32_t token, int64_t pos);
  // Gathered logits (Vp) of the last position of `tokens` by full recomputation.
  const float* recompute(const std::vector<int32_t>& tokens);
  // logits_local_ (Vp_local) -> logits_ (Vp), vocabulary shards in tp-rank order.
  const float* gather_logits(const float* local);
  // A row-parallel linear's output (C): sum the partial products over tp, then add the bias.
  void reduce_and_bias(float* out, const float* bias);

  models::Gpt& model_;
  int64_t C_, Cl_, L_, NH_local_, maxT_, Vp_local_;
  core::Tensor k_cache_, v_cache_;  // (L, maxT, C_local): this rank's heads
  core::Tensor x_, ln_, qkv_, atty_, proj_, fch_, fch_gelu_, mean_, rstd_;
  core::Tensor logits_local_, logits_, scratch_;
  std::vector<float> probs_;
  std::vector<int32_t> order_;
};

}  // namespace tessera::generate
