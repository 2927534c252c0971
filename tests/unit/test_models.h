// Small model configs shared by the unit tests of generation and decode.
#pragma once

#include <cstdint>
#include <vector>

#include "core/config.h"

namespace tessera::testing {

inline constexpr int64_t kSmallVocab = 90;    // small_generation_model's vocabulary
inline constexpr int64_t kSmallContext = 48;  // and its context (max_seq_len)

// A 2-layer GPT (C 32, 4 heads, V 90 padded to 96, context 48) whose init_std of 0.2 (GPT-2: 0.02)
// puts an untrained model's logits far from uniform, so greedy and sampled text say things.
inline core::ModelConfig small_generation_model() {
  core::ModelConfig m;
  m.vocab_size = kSmallVocab;
  m.pad_vocab_to = 32;
  m.max_seq_len = kSmallContext;
  m.n_layer = 2;
  m.n_head = 4;
  m.n_embd = 32;
  m.init_std = 0.2;
  return m;
}

// A prompt of `length` tokens of small_generation_model's vocabulary; each salt its own.
inline std::vector<int32_t> small_prompt(int length, int salt) {
  std::vector<int32_t> p;
  for (int i = 0; i < length; ++i) {
    p.push_back(static_cast<int32_t>((7 * i + 13 * salt + 1) % kSmallVocab));
  }
  return p;
}

}  // namespace tessera::testing
