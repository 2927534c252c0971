// Greedy and nucleus/top-k sampling; see sampler.h.
#include "generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>
#include <string>

#include "core/philox.h"
#include "generate/softmax.h"

namespace tessera::generate {
namespace {

// A float as a user typed it: -1, 1.5, nan, inf.
std::string show(float v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

}  // namespace

core::Status validate(const SamplingOptions& o, const OptionNames& names) {
  if (!std::isfinite(o.temperature) || o.temperature < 0.0f) {
    return core::Status::error(std::string(names.temperature) + " " + show(o.temperature) +
                               " is out of range: it must be a finite number >= 0 (0: greedy, "
                               "1: the model's own distribution), e.g. 0.8");
  }
  if (o.top_k < 0) {
    return core::Status::error(std::string(names.top_k) + " " + std::to_string(o.top_k) +
                               " is out of range: it must be >= 0 (0: off, k: keep the k most "
                               "likely tokens), e.g. 40");
  }
  if (!(o.top_p > 0.0f && o.top_p <= 1.0f)) {
    return core::Status::error(std::string(names.top_p) + " " + show(o.top_p) +
                               " is out of range: it must satisfy 0 < top_p <= 1 (1: off, p: "
                               "keep the most likely tokens holding mass p), e.g. 0.9");
  }
  return core::Status::ok();
}

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
