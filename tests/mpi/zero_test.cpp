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

using tessera::testing::expect_exact_resume;
using tessera::testing::fresh_checkpoint_dir;
using tessera::testing::max_rel_diff;
using tessera::testing::run;
using tessera::testing::small_config;
using tessera::testing::world_rank;
using tessera::testing::world_size;

TEST(Zero, ReduceScatterLeavesEachRankItsPieceSumAndAllGatherRestoresTheRest) {
  parallel::MpiCommunicator comm(MPI_COMM_WORLD, "world");
  const int n = world_size(), r = world_rank();
  // Counts below, at and above the world size, and uneven ones: pieces may be short or empty;
  // multiples of 1, 2 and 4 (12, 1028) take the equal-block collectives.
  for (const int64_t count :
       {int64_t{1}, int64_t{3}, int64_t{10}, int64_t{12}, int64_t{1001}, int64_t{1028}}) {
    std::vector<float> buf(count);
    // Small integers: every sum is exact in any order.
    for (int64_t j = 0; j < count; ++j) buf[j] = static_cast<float>((r + 1) * (j % 7 + 1));
    const float ranks_sum = static_cast<float>(n * (n + 1) / 2);
    comm.reduce_scatter_sum_async(buf.data(), count)->wait();
    const parallel::Piece mine = parallel::piece_of(count, n, r);
    for (int64_t j = mine.begin; j < mine.end; ++j) {
      ASSERT_EQ(buf[j], ranks_sum * static_cast<float>(j % 7 + 1))
          << "count " << count << " j " << j;
    }
    // Everything outside the piece is unspecified: poison it, and the gather must overwrite it.
    for (int64_t j = 0; j < count; ++j) {
      if (j < mine.begin || j >= mine.end) buf[j] = std::numeric_limits<float>::quiet_NaN();
    }
    comm.all_gather_pieces(buf.data(), count);
    for (int64_t j = 0; j < count; ++j) {
      ASSERT_EQ(buf[j], ranks_sum * static_cast<float>(j % 7 + 1))
          << "count " << count << " j " << j;
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

// What a checkpoint moves a sharded moment with: over dp every element of every parameter's
// shard has exactly one owner (OR-ing the ranks' copy_owned_out into zeros gives it whole), and
// copy_owned_in takes back exactly what copy_owned_out gave.
TEST(Zero, OwnedMomentsCoverEveryParameterOnceAndRoundTrip) {
  core::Config c = zero_config(1, 1);
  parallel::ProcessGrid grid(MPI_COMM_WORLD, 1);
  models::Gpt model(c.model, 2, 16, &grid.tp_comm());
  const params::ParamSet& ps = model.param_set();
  parallel::ReducerOptions ro;
  ro.bucket_mb = c.parallel.bucket_mb;
  ro.shard = true;
  parallel::GradientReducer reducer(ps, model.grads(), grid.dp_comm(), ro);
  optim::AdamW sharded(ps, reducer.owned_ranges());
  // Moment element at arena offset a holds 1 + a (m) and -(1 + a) (v): exact in float here.
  for (const optim::ShardSegment& seg : sharded.segments()) {
    for (int64_t j = 0; j < seg.count; ++j) {
      sharded.m().f32()[seg.moment_offset + j] = static_cast<float>(1 + seg.offset + j);
      sharded.v().f32()[seg.moment_offset + j] = -static_cast<float>(1 + seg.offset + j);
    }
  }
  optim::AdamW back(ps, reducer.owned_ranges());
  for (int i = 0; i < ps.size(); ++i) {
    for (int which = 0; which < 2; ++which) {
      std::vector<float> shard(ps.local_numel(i), 0.0f);
      sharded.copy_owned_out(i, which, shard.data());
      MPI_Allreduce(MPI_IN_PLACE, shard.data(), static_cast<int>(shard.size()), MPI_UINT32_T,
                    MPI_BOR, MPI_COMM_WORLD);
      for (int64_t j = 0; j < ps.local_numel(i); ++j) {
        const float want = (which == 0 ? 1.0f : -1.0f) * static_cast<float>(1 + ps.offset(i) + j);
        ASSERT_EQ(shard[j], want) << ps.specs()[i].name << " moment " << which << " element " << j;
      }
      back.copy_owned_in(i, which, shard.data());
    }
  }
  int64_t compared = 0;
  for (const optim::ShardSegment& seg : sharded.segments()) {
    for (int64_t j = seg.moment_offset; j < seg.moment_offset + seg.count; ++j) {
      ASSERT_EQ(back.m().f32()[j], sharded.m().f32()[j]) << "compact element " << j;
      ASSERT_EQ(back.v().f32()[j], sharded.v().f32()[j]) << "compact element " << j;
    }
    compared += seg.count;
  }
  EXPECT_GT(compared, 0);
}

// With independent and with collective HDF5 transfers (the moments' dp gather and broadcast sit
// between the collective dataset calls).
TEST(Zero, AShardedRunResumesBitIdentically) {
  for (const char* transfers : {"independent", "collective"}) {
    core::Config c = zero_config(1, 1);
    c.checkpoint.transfers = transfers;
    expect_exact_resume(c, "zero-exact", transfers);
  }
}

// Both ways, at tp 1 and (world 4) tp 2: a file written with zero 1 at dp x tp = world resumes
// with zero 0 on one rank alone, and one written with zero 0 on one rank resumes with zero 1.
TEST(Zero, CheckpointsCrossTheSettingBothWays) {
  for (int tp = 1; tp <= 2; ++tp) {
    if (tp > 1 && world_size() < 4) continue;  // dp 1: zero 1 would have nothing to shard
    const std::string grid =
        "dp " + std::to_string(world_size() / tp) + " x tp " + std::to_string(tp);
    // Written with zero 1 on the world's grid, resumed with zero 0 on one rank alone.
    {
      core::Config c = zero_config(tp, 1);
      c.checkpoint.dir = fresh_checkpoint_dir("zero-to-plain");
      c.checkpoint.every = 10;
      const std::vector<double> full = run(c, MPI_COMM_WORLD);
      ASSERT_EQ(full.size(), 20u);
      core::Config r = zero_config(1, 0);
      r.checkpoint.resume = checkpoint::checkpoint_path(c.checkpoint.dir, 10);
      r.train.out_dir += "-zero-to-plain";
      std::vector<double> resumed(10, 0.0);
      if (world_rank() == 0) resumed = run(r, MPI_COMM_SELF);
      ASSERT_EQ(resumed.size(), 10u);
      MPI_Bcast(resumed.data(), 10, MPI_DOUBLE, 0, MPI_COMM_WORLD);
      const std::vector<double> expected(full.begin() + 10, full.end());
      EXPECT_LT(max_rel_diff(resumed, expected), 1e-5)
          << "written with zero 1 at " << grid << ", resumed with zero 0 at dp 1 x tp 1";
    }
    // Written with zero 0 on one rank (rank 0 alone), resumed with zero 1 on the world's grid.
    {
      core::Config c = zero_config(1, 0);
      c.checkpoint.dir = fresh_checkpoint_dir("plain-to-zero");
      c.checkpoint.every = 10;
      std::vector<double> full(20, 0.0);
      if (world_rank() == 0) full = run(c, MPI_COMM_SELF);
      ASSERT_EQ(full.size(), 20u);
      MPI_Bcast(full.data(), 20, MPI_DOUBLE, 0, MPI_COMM_WORLD);
      core::Config r = zero_config(tp, 1);
      r.checkpoint.resume = checkpoint::checkpoint_path(c.checkpoint.dir, 10);
      r.train.out_dir += "-plain-to-zero";
      const std::vector<double> resumed = run(r, MPI_COMM_WORLD);
      ASSERT_EQ(resumed.size(), 10u);
      const std::vector<double> expected(full.begin() + 10, full.end());
      EXPECT_LT(max_rel_diff(resumed, expected), 1e-5)
          << "written with zero 0 at dp 1 x tp 1, resumed with zero 1 at " << grid;
    }
  }
}

}  // namespace
}  // namespace tessera
