// Sharded construction: each rank allocates only its shard (parameter bytes = replicated +
// sharded / tp), and the shards, gathered, are bitwise the 1 x 1 model's initial weights.
#include <gtest/gtest.h>
#include <mpi.h>

#include "models/gpt.h"
#include "parallel/process_grid.h"

namespace tessera::models {
namespace {

core::ModelConfig model_config() {
  core::ModelConfig m;
  m.vocab_size = 300;
  m.pad_vocab_to = 128;  // Vp = 384: divisible by 1, 2, 4
  m.max_seq_len = 16;
  m.n_layer = 2;
  m.n_head = 4;
  m.n_embd = 32;
  return m;
}

TEST(ShardedModel, EachRankAllocatesOnlyItsShard) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  parallel::ProcessGrid grid(MPI_COMM_WORLD, world);
  Gpt model(model_config(), 1, 16, &grid.tp_comm());
  int64_t replicated = 0, sharded = 0, local = 0;
  for (int i = 0; i < model.param_set().size(); ++i) {
    const ParamSpec& s = model.param_set().specs()[i];
    (s.replicated() ? replicated : sharded) += core::shape_numel(s.global_shape);
    local += model.param_set().local_numel(i);
  }
  EXPECT_EQ(local, replicated + sharded / world);
  // The arena adds at most 15 floats of alignment per parameter.
  EXPECT_LE(model.param_set().total_local_numel(), local + 15 * model.param_set().size());
  EXPECT_GE(model.param_set().total_local_numel(), local);
}

TEST(ShardedModel, GatheredShardsEqualTheWholeModelBitwise) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  parallel::ProcessGrid whole_grid(MPI_COMM_SELF, 1);
  Gpt whole(model_config(), 1, 16, &whole_grid.tp_comm());
  whole.init_weights(77);
  parallel::ProcessGrid grid(MPI_COMM_WORLD, world);
  Gpt shard(model_config(), 1, 16, &grid.tp_comm());
  shard.init_weights(77);
  const ParamSet& ps = shard.param_set();
  for (int i = 0; i < ps.size(); ++i) {
    const ParamSpec& s = ps.specs()[i];
    const int64_t n = ps.local_numel(i);
    std::vector<float> gathered(n * world);
    grid.tp_comm().all_gather(gathered.data(), ps.view(shard.weights(), i).f32(), n);
    const float* expected = whole.param(s.name).f32();
    for (int r = 0; r < world; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        const int64_t g = s.replicated() ? j : s.global_index(j, r, world);
        ASSERT_EQ(gathered[r * n + j], expected[g])
            << s.name << " tp rank " << r << " element " << j;
      }
    }
  }
}

}  // namespace
}  // namespace tessera::models
