// Small model configs shared by the unit tests of generation and decode.
#pragma once

#include "core/config.h"

namespace tessera::testing {

// A 2-layer GPT (C 32, 4 heads, V 90 padded to 96, context 48) whose init_std of 0.2 (GPT-2: 0.02)
// puts an untrained model's logits far from uniform, so greedy and sampled text say things.
inline core::ModelConfig small_generation_model() {
  core::ModelConfig m;
  m.vocab_size = 90;
  m.pad_vocab_to = 32;
  m.max_seq_len = 48;
  m.n_layer = 2;
  m.n_head = 4;
  m.n_embd = 32;
  m.init_std = 0.2;
  return m;
}

}  // namespace tessera::testing
