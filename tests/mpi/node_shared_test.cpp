// Node-shared arenas (parallel.node_shared) for the dp group on one node: every rank of the dp
// group reads and writes the others' arenas directly; the sharded reducer (ZeRO-1) sums each
// rank's pieces from them and gathers the weights' pieces back, the replicated one (zero 0) gives
// every rank every sum; training through them gives the losses of the MPI exchange (relative
// 1e-6 over 20 steps) with zero 0 and 1 on every grid of this world.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/config.h"
#include "models/gpt.h"
#include "mpi_test_util.h"
#include "parallel/communicator.h"
#include "parallel/gradient_reducer.h"
#include "parallel/node_shared_arenas.h"
#include "parallel/process_grid.h"
#include "params/param_spec.h"
#include "train_test_util.h"

namespace tessera {
namespace {

using tessera::testing::max_rel_diff;
using tessera::testing::run;
using tessera::testing::small_config;
using tessera::testing::world_rank;
using tessera::testing::world_size;

TEST(NodeShared, EveryRankSeesEveryRanksArenas) {
  const int n = world_size(), r = world_rank();
  std::string why;
  auto shared = parallel::NodeSharedArenas::create(MPI_COMM_WORLD, 1001, 2, &why);
  ASSERT_TRUE(shared) << why;  // mpirun starts every rank of these tests on this machine
  EXPECT_EQ(shared->size(), n);
  EXPECT_EQ(shared->rank(), r);
  core::Tensor a = shared->arena(0), b = shared->arena(1);
  ASSERT_EQ(a.numel(), 1001);
  EXPECT_EQ(shared->index_of(a.raw()), 0);
  EXPECT_EQ(shared->index_of(b.raw()), 1);
  EXPECT_EQ(shared->index_of(a.f32() + 1), -1);
  for (int64_t j = 0; j < 1001; ++j) {
    ASSERT_EQ(a.f32()[j], 0.0f) << "arenas start zeroed";
    a.f32()[j] = static_cast<float>(r * 10000 + j);
    b.f32()[j] = -static_cast<float>(r * 10000 + j);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  for (int q = 0; q < n; ++q) {
    for (int64_t j = 0; j < 1001; j += 97) {
      ASSERT_EQ(shared->peer(q, 0)[j], static_cast<float>(q * 10000 + j)) << "rank " << q;
      ASSERT_EQ(shared->peer(q, 1)[j], -static_cast<float>(q * 10000 + j)) << "rank " << q;
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// One step of `reducer`: every rank's gradient element j is (rank + 1 + step) * (j % 7 + 1), small
// integers whose sums are exact in any order; half the parameters are marked ready, the rest left
// to finish(). Returns the factor every summed element carries: the sum over ranks of
// (rank + 1 + step).
float reduce_step(parallel::GradientReducer& reducer, const params::ParamSet& ps,
                  core::Tensor& grads, int step) {
  for (int64_t j = 0; j < grads.numel(); ++j) {
    grads.f32()[j] = static_cast<float>((world_rank() + 1 + step) * (j % 7 + 1));
  }
  for (int i = ps.size() - 1; i >= 0; i -= 2) reducer.mark_ready(i);
  reducer.finish();
  float ranks_sum = 0;
  for (int q = 0; q < world_size(); ++q) ranks_sum += static_cast<float>(q + 1 + step);
  return ranks_sum;
}

// Several buckets (a small cap), so pieces cut through parameters and padding.
TEST(NodeShared, ReducerSumsEveryRanksPiecesAndGathersTheWeights) {
  core::Config c = small_config(1);
  parallel::ProcessGrid grid(MPI_COMM_WORLD, 1);
  params::ParamSet ps(models::Gpt::param_specs(c.model), 0, 1);
  std::string why;
  auto shared = parallel::NodeSharedArenas::create(grid.dp_comm(), ps.total_local_numel(), 2, &why);
  ASSERT_TRUE(shared) << why;
  core::Tensor weights = shared->arena(0), grads = shared->arena(1);
  parallel::ReducerOptions ro;
  ro.bucket_mb = 0.01;
  ro.shard = true;
  ro.average = false;
  ro.node_shared = shared;
  parallel::GradientReducer reducer(ps, grads, grid.dp_comm(), ro);
  ASSERT_GT(reducer.num_buckets(), 3);
  const int64_t total = grads.numel();
  // Two steps: the second must not see the first's sums.
  for (int step = 0; step < 2; ++step) {
    const float ranks_sum = reduce_step(reducer, ps, grads, step);
    int64_t owned = 0;
    for (const parallel::Piece& p : reducer.owned_ranges()) {
      owned += p.size();
      for (int64_t j = p.begin; j < p.end; ++j) {
        ASSERT_EQ(grads.f32()[j], ranks_sum * static_cast<float>(j % 7 + 1)) << "j " << j;
      }
    }
    int64_t all_owned = owned;
    MPI_Allreduce(MPI_IN_PLACE, &all_owned, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    EXPECT_EQ(all_owned, total) << "the pieces cover the arena once";
    // Each rank writes its own pieces of the weights; the rest is poisoned and must be replaced.
    for (int64_t j = 0; j < total; ++j) weights.f32()[j] = std::numeric_limits<float>::quiet_NaN();
    for (const parallel::Piece& p : reducer.owned_ranges()) {
      for (int64_t j = p.begin; j < p.end; ++j) weights.f32()[j] = static_cast<float>(j + step);
    }
    reducer.all_gather_owned(weights);
    for (int64_t j = 0; j < total; ++j) {
      ASSERT_EQ(weights.f32()[j], static_cast<float>(j + step)) << "j " << j;
    }
    MPI_Barrier(MPI_COMM_WORLD);  // nobody poisons its weights while another still copies them
  }
}

TEST(NodeShared, ReplicatedReducerGivesEveryRankEverySum) {
  core::Config c = small_config(1);
  parallel::ProcessGrid grid(MPI_COMM_WORLD, 1);
  params::ParamSet ps(models::Gpt::param_specs(c.model), 0, 1);
  std::string why;
  auto shared = parallel::NodeSharedArenas::create(grid.dp_comm(), ps.total_local_numel(), 1, &why);
  ASSERT_TRUE(shared) << why;
  core::Tensor grads = shared->arena(0);
  parallel::ReducerOptions ro;
  ro.bucket_mb = 0.01;
  ro.average = false;
  ro.node_shared = shared;
  parallel::GradientReducer reducer(ps, grads, grid.dp_comm(), ro);
  ASSERT_GT(reducer.num_buckets(), 3);
  // Three steps: each must see only its own gradients, and a rank that races ahead to write
  // the next step's must not spoil a slower rank's copy of this step's sums.
  for (int step = 0; step < 3; ++step) {
    const float ranks_sum = reduce_step(reducer, ps, grads, step);
    for (int64_t j = 0; j < grads.numel(); ++j) {
      ASSERT_EQ(grads.f32()[j], ranks_sum * static_cast<float>(j % 7 + 1)) << "j " << j;
    }
  }
}

TEST(NodeShared, LossesEqualTheMpiExchangesOnEveryGrid) {
  for (int tp = 1; tp <= world_size(); tp *= 2) {
    if (world_size() % tp != 0) continue;
    for (int zero = 0; zero <= 1; ++zero) {
      core::Config c = small_config(tp);
      c.parallel.bucket_mb = 0.01;
      c.optim.zero = zero;
      c.parallel.node_shared = "off";
      const std::vector<double> mpi = run(c, MPI_COMM_WORLD);
      c.parallel.node_shared = "on";
      const std::vector<double> shared = run(c, MPI_COMM_WORLD);
      ASSERT_EQ(mpi.size(), 20u);
      ASSERT_EQ(shared.size(), 20u);
      const double diff = max_rel_diff(shared, mpi);
      if (world_rank() == 0) {
        std::printf(
            "node-shared vs MPI, zero %d at dp %d x tp %d: max relative loss difference "
            "%.3g\n",
            zero, world_size() / tp, tp, diff);
      }
      EXPECT_LT(diff, 1e-6) << "grid dp " << world_size() / tp << " x tp " << tp << ", zero "
                            << zero;
      EXPECT_LT(shared.back(), shared.front() - 0.5) << "the loss should fall";
    }
  }
}

TEST(NodeShared, OnWithSparseEmbeddingOnIsAConfigErrorNamingTheFix) {
  core::Config c = small_config(1);
  c.parallel.node_shared = "on";
  EXPECT_TRUE(c.validate().is_ok()) << "on with zero 0 is allowed";
  c.parallel.sparse_embedding = "on";
  const core::Status s = c.validate();
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("parallel.node_shared"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("parallel.sparse_embedding=on"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("set one of them to auto"), std::string::npos) << s.message();
  c.parallel.sparse_embedding = "auto";
  c.parallel.node_shared = "sometimes";
  EXPECT_FALSE(c.validate().is_ok());
}

}  // namespace
}  // namespace tessera
