// ZeRO-1 (optim.zero 1): the sharded collectives leave each rank its piece's sum and gather the
// pieces back; training with the moments sharded over dp gives the losses of the replicated
// optimizer (relative 1e-6 over 20 steps) on every grid of this world; each rank holds 1/dp of
// the moments; checkpoints cross the setting both ways, and a sharded run resumes bit-identically.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <limits>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "models/gpt.h"
#include "mpi_test_util.h"
#include "optim/optimizer.h"
#include "parallel/communicator.h"
#include "parallel/gradient_reducer.h"
#include "parallel/process_grid.h"
#include "train_test_util.h"

namespace tessera {
namespace {

using tessera::testing::fresh_checkpoint_dir;
using tessera::testing::max_rel_diff;
using tessera::testing::run;
using tessera::testing::small_config;
using tessera::testing::world_rank;
using tessera::testing::world_size;

TEST(Zero, ReduceScatterLeavesEachRankItsPieceSumAndAllGatherRestoresTheRest) {
  parallel::MpiCommunicator comm(MPI_COMM_WORLD, "world");
  const int n = world_size(), r = world_rank();
  // Counts below, at and above the world size, and uneven ones: pieces may be short or empty.
  for (const int64_t count : {int64_t{1}, int64_t{3}, int64_t{10}, int64_t{1001}}) {
    std::vector<float> buf(count);
    // Small integers: every sum is exact in any order.
    for (int64_t j = 0; j < count; ++j) buf[j] = static_cast<float>((r + 1) * (j % 7 + 1));
    const float ranks_sum = static_cast<float>(n * (n + 1) / 2);
    comm.reduce_scatter_sum_async(buf.data(), count)->wait();
    const parallel::Piece mine = parallel::piece_of(count, n, r);
    for (int64_t j = mine.begin; j < mine.end; ++j) {
      ASSERT_EQ(buf[j], ranks_sum * static_cast<float>(j % 7 + 1)) << "count " << count << " j " << j;
    }
    // Everything outside the piece is unspecified: poison it, and the gather must overwrite it.
    for (int64_t j = 0; j < count; ++j) {
      if (j < mine.begin || j >= mine.end) buf[j] = std::numeric_limits<float>::quiet_NaN();
    }
    comm.all_gather_pieces(buf.data(), count);
    for (int64_t j = 0; j < count; ++j) {
      ASSERT_EQ(buf[j], ranks_sum * static_cast<float>(j % 7 + 1)) << "count " << count << " j " << j;
    }
  }
}

// Several buckets (a small cap), so pieces cut through parameters and padding.
core::Config zero_config(int tp, int zero) {
  core::Config c = small_config(tp);
  c.parallel.bucket_mb = 0.01;
  c.optim.zero = zero;
  return c;
}

TEST(Zero, LossesEqualTheReplicatedOptimizersOnEveryGrid) {
  for (int tp = 1; tp <= world_size(); tp *= 2) {
    if (world_size() % tp != 0) continue;
    const std::vector<double> replicated = run(zero_config(tp, 0), MPI_COMM_WORLD);
    const std::vector<double> sharded = run(zero_config(tp, 1), MPI_COMM_WORLD);
    ASSERT_EQ(replicated.size(), 20u);
    ASSERT_EQ(sharded.size(), 20u);
    const double diff = max_rel_diff(sharded, replicated);
    if (world_rank() == 0) {
      std::printf(
          "zero 1 vs zero 0 at dp %d x tp %d: max relative loss difference over 20 steps %.3g\n",
          world_size() / tp, tp, diff);
    }
    EXPECT_LT(diff, 1e-6) << "grid dp " << world_size() / tp << " x tp " << tp;
    EXPECT_LT(sharded.back(), sharded.front() - 0.5) << "the loss should fall";
  }
}

TEST(Zero, EachRankHoldsItsShareOfTheMoments) {
  const int dp = world_size();
  core::Config c = zero_config(1, 1);
  parallel::ProcessGrid grid(MPI_COMM_WORLD, 1);
  models::Gpt model(c.model, 2, 16, &grid.tp_comm());
  parallel::ReducerOptions ro;
  ro.bucket_mb = c.parallel.bucket_mb;
  ro.shard = true;
  parallel::GradientReducer reducer(model.param_set(), model.grads(), grid.dp_comm(), ro);
  optim::AdamW sharded(model.param_set(), reducer.owned_ranges());
  optim::AdamW replicated(model.param_set());
  ASSERT_GT(reducer.num_buckets(), 3);
  const int64_t total = model.param_set().total_local_numel();
  EXPECT_EQ(replicated.state_bytes(), 2 * 4 * total);
  // One piece per bucket, each ceil(count / dp) at most: total / dp, plus under one element per
  // bucket of rounding.
  const double share = static_cast<double>(sharded.state_bytes()) / (2 * 4);
  EXPECT_LE(std::fabs(share - static_cast<double>(total) / dp), reducer.num_buckets())
      << "moments held: " << share << " elements of " << total << " over dp " << dp;
  // The pieces partition the buckets' ranges: summed over ranks, every element once.
  double held = share;
  MPI_Allreduce(MPI_IN_PLACE, &held, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  int64_t covered = 0;
  for (const parallel::Piece& p : reducer.owned_ranges()) covered += p.size();
  int64_t bucketed = covered;
  MPI_Allreduce(MPI_IN_PLACE, &bucketed, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  EXPECT_EQ(static_cast<int64_t>(held), bucketed);
  EXPECT_LE(bucketed, total);
  EXPECT_GE(bucketed, total - 16);  // at most the arena's trailing alignment is outside
}

TEST(Zero, AShardedRunResumesBitIdentically) {
  core::Config c = zero_config(1, 1);
  c.checkpoint.dir = fresh_checkpoint_dir("zero-exact");
  c.checkpoint.every = 10;
  const std::vector<double> full = run(c, MPI_COMM_WORLD);
  ASSERT_EQ(full.size(), 20u);
  c.checkpoint.resume = checkpoint::checkpoint_path(c.checkpoint.dir, 10);
  const std::vector<double> resumed = run(c, MPI_COMM_WORLD);
  ASSERT_EQ(resumed.size(), 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(resumed[i], full[10 + i]) << "step " << 11 + i;
}

TEST(Zero, CheckpointsCrossTheSettingBothWays) {
  // Written with zero 1 at dp = world, resumed with zero 0 on one rank alone.
  {
    core::Config c = zero_config(1, 1);
    c.checkpoint.dir = fresh_checkpoint_dir("zero-to-plain");
    c.checkpoint.every = 10;
    const std::vector<double> full = run(c, MPI_COMM_WORLD);
    ASSERT_EQ(full.size(), 20u);
    core::Config r = zero_config(1, 0);
    r.checkpoint.resume = checkpoint::checkpoint_path(c.checkpoint.dir, 10);
    r.train.out_dir += "-zero-to-plain";
    const std::vector<double> resumed = run(r, MPI_COMM_SELF);
    ASSERT_EQ(resumed.size(), 10u);
    const std::vector<double> expected(full.begin() + 10, full.end());
    EXPECT_LT(max_rel_diff(resumed, expected), 1e-5)
        << "written with zero 1 at dp " << world_size() << ", resumed with zero 0 at dp 1";
  }
  // Written with zero 0 on one rank (rank 0 alone), resumed with zero 1 at dp = world.
  {
    core::Config c = zero_config(1, 0);
    c.checkpoint.dir = fresh_checkpoint_dir("plain-to-zero");
    c.checkpoint.every = 10;
    std::vector<double> full(20, 0.0);
    if (world_rank() == 0) full = run(c, MPI_COMM_SELF);
    ASSERT_EQ(full.size(), 20u);
    MPI_Bcast(full.data(), 20, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    core::Config r = zero_config(1, 1);
    r.checkpoint.resume = checkpoint::checkpoint_path(c.checkpoint.dir, 10);
    r.train.out_dir += "-plain-to-zero";
    const std::vector<double> resumed = run(r, MPI_COMM_WORLD);
    ASSERT_EQ(resumed.size(), 10u);
    const std::vector<double> expected(full.begin() + 10, full.end());
    EXPECT_LT(max_rel_diff(resumed, expected), 1e-5)
        << "written with zero 0 at dp 1, resumed with zero 1 at dp " << world_size();
  }
}

}  // namespace
}  // namespace tessera
