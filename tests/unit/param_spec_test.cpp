// ParamSpec table: GPT-2 parameter counts, shard index arithmetic and layout-invariant init.
#include "params/param_spec.h"

#include <gtest/gtest.h>

#include "core/config.h"
#include "models/gpt.h"

namespace tessera::params {
namespace {

TEST(ParamSpec, Gpt2SmallHas124439808Parameters) {
  core::ModelConfig m;
  m.vocab_size = 50257;
  m.pad_vocab_to = 128;
  m.max_seq_len = 1024;
  m.n_layer = 12;
  m.n_head = 12;
  m.n_embd = 768;
  EXPECT_EQ(m.padded_vocab_size(), 50304);
  ParamSet ps(models::Gpt::param_specs(m), 0, 1);
  EXPECT_EQ(ps.global_param_count(/*exclude_padding=*/true), 124439808);
  EXPECT_EQ(ps.global_param_count(false), 124439808 + (50304 - 50257) * 768);
  // Registration order is fixed: embeddings, 12 per layer, final layernorm.
  EXPECT_EQ(ps.size(), 2 + 12 * 12 + 2);
  EXPECT_EQ(ps.specs()[2].name, "h.0.ln_1.weight");
  EXPECT_EQ(ps.specs().back().name, "ln_f.bias");
}

// A shard's elements, initialised on their own, equal the matching slice of the whole tensor:
// the property that makes the initial model the same on every grid.
TEST(ParamSpec, ShardsInitialiseToSlicesOfTheWholeTensor) {
  core::ModelConfig m;
  m.vocab_size = 100;
  m.pad_vocab_to = 64;  // Vp = 128
  m.max_seq_len = 16;
  m.n_layer = 1;
  m.n_head = 4;
  m.n_embd = 16;
  ParamSet whole(models::Gpt::param_specs(m), 0, 1);
  core::Tensor full = whole.make_twin();
  whole.initialise(full, 99);
  for (int tp = 2; tp <= 4; tp *= 2) {
    for (int r = 0; r < tp; ++r) {
      ParamSet shard(models::Gpt::param_specs(m), r, tp);
      core::Tensor local = shard.make_twin();
      shard.initialise(local, 99);
      for (int i = 0; i < shard.size(); ++i) {
        const float* a = shard.view(local, i).f32();
        const float* b = whole.view(full, i).f32();
        for (int64_t j = 0; j < shard.local_numel(i); ++j) {
          const int64_t g = shard.specs()[i].global_index(j, r, tp);
          ASSERT_EQ(a[j], b[g]) << shard.specs()[i].name << " tp=" << tp << " rank=" << r
                                << " local " << j;
        }
      }
    }
  }
}

TEST(ParamSpec, FusedQkvShardHoldsItsHeadsOfQKAndV) {
  // (3C, C) with C = 4, tp = 2: rank 1 holds rows 2-3 of q, k and v: global rows 2,3,6,7,10,11.
  ParamSpec s{"qkv", {12, 4}, 0, 3, Init::kNormal, 0.02f, -1, true};
  EXPECT_EQ(s.local_shape(2), (core::Shape{6, 4}));
  const int64_t expected_rows[] = {2, 3, 6, 7, 10, 11};
  for (int64_t row = 0; row < 6; ++row) {
    EXPECT_EQ(s.global_index(row * 4 + 1, 1, 2), expected_rows[row] * 4 + 1);
  }
  // Row-parallel split of the last dim: (4, 8) split on dim 1, rank 1 holds columns 4-7.
  ParamSpec r{"proj", {4, 8}, 1, 1, Init::kNormal, 0.02f, -1, true};
  EXPECT_EQ(r.global_index(0, 1, 2), 4);
  EXPECT_EQ(r.global_index(5, 1, 2), 8 + 5);
}

TEST(ParamSpec, VocabularyPaddingRowsInitialiseToZero) {
  core::ModelConfig m;
  m.vocab_size = 100;
  m.pad_vocab_to = 64;
  m.n_layer = 1;
  m.n_head = 2;
  m.n_embd = 8;
  m.max_seq_len = 8;
  ParamSet ps(models::Gpt::param_specs(m), 0, 1);
  core::Tensor w = ps.make_twin();
  ps.initialise(w, 5);
  const float* wte = ps.view(w, 0).f32();
  int nonzero_real = 0;
  for (int64_t v = 0; v < 128; ++v) {
    for (int c = 0; c < 8; ++c) {
      if (v >= 100) {
        ASSERT_EQ(wte[v * 8 + c], 0.0f) << "padding row " << v;
      }
      nonzero_real += v < 100 && wte[v * 8 + c] != 0.0f;
    }
  }
  EXPECT_EQ(nonzero_real, 800);
}

}  // namespace
}  // namespace tessera::params
