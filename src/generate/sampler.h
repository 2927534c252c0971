// Next-token choice from logits: greedy, or temperature / top-k / top-p sampling whose random
// number is Philox(seed, kSampling, draw index), so the same seed gives the same text on any grid.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace tessera::generate {

struct SamplingOptions {
  float temperature = 1.0f;  // 0: greedy (argmax, lowest id on ties)
  int top_k = 0;             // 0: off
  float top_p = 1.0f;        // 1: off
  uint64_t seed = 1337;
};

// What a caller calls each option in its messages: the command line's flags, a request's JSON
// fields. The defaults are the request field names (OpenAI-style).
struct OptionNames {
  const char* temperature = "temperature";
  const char* top_k = "top_k";
  const char* top_p = "top_p";
  const char* max_tokens = "max_tokens";
};

// The rules on sampling options, in one place: temperature finite and >= 0 (0: greedy); top_k
// >= 0 (0: off); 0 < top_p <= 1 (1: off). An error names the option (as `names` calls it), the
// value and the allowed range.
core::Status validate(const SamplingOptions& options, const OptionNames& names = {});

// logits: the V real vocabulary entries. scratch is reused across calls (grows once).
int32_t sample_token(const float* logits, int64_t V, const SamplingOptions& options,
                     uint64_t draw_index, std::vector<float>& probs, std::vector<int32_t>& order);

}  // namespace tessera::generate
