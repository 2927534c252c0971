// Layout-independent checksums: pinned values (the Python reference in
// docs/CHECKPOINT-FORMAT.md gives the same), shard parts that sum to the whole at every tp for
// every GPT parameter shape, and sensitivity to any changed or moved element.
#include "checkpoint/checksum.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "core/config.h"
#include "models/gpt.h"

namespace tessera::checkpoint {
namespace {

TEST(Checksum, MatchesThePinnedReferenceValues) {
  // docs/CHECKPOINT-FORMAT.md: checksum([1.0, -2.5, 0.0, 0.1]) == 0xe237cdb009c0ce8d.
  const float values[] = {1.0f, -2.5f, 0.0f, 0.1f};
  EXPECT_EQ(tensor_checksum(values, 4), 0xe237cdb009c0ce8dull);
  EXPECT_EQ(tensor_checksum(values, 0), 0ull);
  EXPECT_EQ(mix64(1), 0x5692161d100b05e5ull);
}

TEST(Checksum, ChangesWithAnyElementOrItsPosition) {
  std::vector<float> x(1000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.001f * static_cast<float>(i) - 0.3f;
  const uint64_t base = tensor_checksum(x.data(), 1000);
  std::vector<float> y = x;
  uint32_t bits;
  std::memcpy(&bits, &y[517], 4);
  bits ^= 1u;  // the lowest mantissa bit
  std::memcpy(&y[517], &bits, 4);
  EXPECT_NE(tensor_checksum(y.data(), 1000), base);
  y = x;
  std::swap(y[3], y[900]);
  EXPECT_NE(tensor_checksum(y.data(), 1000), base);
  y = x;
  y[10] = -0.0f;
  x[10] = 0.0f;
  EXPECT_NE(tensor_checksum(y.data(), 1000), tensor_checksum(x.data(), 1000));  // bits, not values
}

// For every parameter of a small GPT and every tp: the shard parts, summed over tp ranks, equal
// the checksum of the whole tensor (qkv's three blocks and row-parallel columns included).
TEST(Checksum, ShardPartsSumToTheWholeAtEveryTp) {
  core::ModelConfig m;
  m.vocab_size = 300;
  m.pad_vocab_to = 128;
  m.max_seq_len = 16;
  m.n_layer = 1;
  m.n_head = 4;
  m.n_embd = 32;
  const std::vector<params::ParamSpec> specs = models::Gpt::param_specs(m);
  params::ParamSet whole(specs, 0, 1);
  core::Tensor whole_arena = whole.make_twin();
  whole.initialise(whole_arena, 5);
  for (int tp : {1, 2, 4}) {
    for (int i = 0; i < whole.size(); ++i) {
      const params::ParamSpec& s = specs[i];
      const float* full = whole.view(whole_arena, i).f32();
      const uint64_t expected = tensor_checksum(full, whole.local_numel(i));
      uint64_t sum = 0;
      for (int r = 0; r < tp; ++r) {
        params::ParamSet shard_set(specs, r, tp);
        std::vector<float> shard(shard_set.local_numel(i));
        for (size_t j = 0; j < shard.size(); ++j) {
          shard[j] = full[s.replicated() ? j : s.global_index(static_cast<int64_t>(j), r, tp)];
        }
        const uint64_t part =
            shard_checksum(s, shard.data(), static_cast<int64_t>(shard.size()), r, tp);
        if (s.replicated()) {
          EXPECT_EQ(part, expected) << s.name << " tp " << tp << " rank " << r;
          if (r == 0) sum += part;
        } else {
          sum += part;
        }
      }
      EXPECT_EQ(sum, expected) << s.name << " tp " << tp;
    }
  }
}

}  // namespace
}  // namespace tessera::checkpoint
