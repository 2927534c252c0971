// softmax_forward: one row with a temperature, for sampling during generation.
#pragma once

#include <cstdint>

#include "core/fast_exp.h"

namespace tessera::generate {

// probs (n) = softmax(logits (n) / temperature), computed as exp((z - max z) / temperature) / sum
// so no term overflows. Preconditions: n >= 1, temperature > 0 (greedy decoding is the caller's
// argmax, not temperature 0). Logits of -inf (masked tokens) get probability 0. probs may be
// logits itself (in place). Single-threaded: generation calls it once per sequence per step.
template <typename T>
void softmax_forward(T* probs, const T* logits, int64_t n, T temperature);

}  // namespace tessera::generate
