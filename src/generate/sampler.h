// Next-token choice from logits: greedy, or temperature / top-k / top-p sampling whose random
// number is Philox(seed, kSampling, draw index), so the same seed gives the same text on any grid.
#pragma once

#include <cstdint>
#include <vector>

namespace tessera::generate {

struct SamplingOptions {
  float temperature = 1.0f;  // 0: greedy (argmax, lowest id on ties)
  int top_k = 0;             // 0: off
  float top_p = 1.0f;        // 1: off
  uint64_t seed = 1337;
};

// logits: the V real vocabulary entries. scratch is reused across calls (grows once).
int32_t sample_token(const float* logits, int64_t V, const SamplingOptions& options,
                     uint64_t draw_index, std::vector<float>& probs, std::vector<int32_t>& order);

}  // namespace tessera::generate
