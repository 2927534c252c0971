// Greedy and nucleus/top-k sampling; see sampler.h.
#include "generate/sampler.h"

#include <algorithm>
#include <numeric>

#include "core/philox.h"
#include "generate/softmax.h"

namespace tessera::generate {

int32_t sample_token(const float* logits, int64_t V, const SamplingOptions& o, uint64_t draw_index,
                     std::vector<float>& probs, std::vector<int32_t>& order) {
  if (o.temperature <= 0.0f) {
    return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  }
  probs.resize(V);
  order.resize(V);
  softmax_forward(probs.data(), logits, V, o.temperature);
  std::iota(order.begin(), order.end(), 0);
  // Highest probability first; ties by lower id, so the order is fully determined.
  auto by_prob = [&](int32_t a, int32_t b) {
    return probs[a] != probs[b] ? probs[a] > probs[b] : a < b;
  };
  int64_t keep = V;
  if (o.top_k > 0 && o.top_k < V) {
    keep = o.top_k;
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), by_prob);
  } else {
    std::sort(order.begin(), order.end(), by_prob);
  }
  if (o.top_p < 1.0f) {
    double cum = 0;
    for (int64_t i = 0; i < keep; ++i) {
      cum += probs[order[i]];
      if (cum >= o.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += probs[order[i]];
  const double u =
      core::uniform01(o.seed, static_cast<uint64_t>(core::RngStream::kSampling), draw_index) *
      total;
  double cum = 0;
  for (int64_t i = 0; i < keep; ++i) {
    cum += probs[order[i]];
    if (u < cum) return order[i];
  }
  return order[keep - 1];
}

}  // namespace tessera::generate
