// The tied wte's split gradient (GradientReducer sparse rows, parallel.sparse_embedding): the
// reducer's sparse exchange against a closed form (duplicate ids, ids no other rank has, ids
// outside the table, several calls, two steps, sharded), the GPT's gradients against the dense
// path on every grid of this world, and training losses against a 1 x 1 run. 1, 2 and 4 ranks.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/philox.h"
#include "models/gpt.h"
#include "mpi_test_util.h"
#include "parallel/communicator.h"
#include "parallel/gradient_reducer.h"
#include "parallel/process_grid.h"
#include "params/param_spec.h"
#include "train_test_util.h"

namespace tessera {
namespace {

using parallel::GradientReducer;
using parallel::MpiCommunicator;
using parallel::ReducerOptions;
using params::ParamSet;
using params::ParamSpec;
using tessera::testing::max_rel_diff;
using tessera::testing::run;
using tessera::testing::small_config;
using tessera::testing::world_rank;
using tessera::testing::world_size;

constexpr int64_t kTableRows = 64, kWidth = 16;  // the "wte" of the layout below

std::vector<ParamSpec> layout() {
  std::vector<ParamSpec> specs;
  auto add = [&specs](const std::string& name, core::Shape shape) {
    ParamSpec spec;
    spec.name = name;
    spec.global_shape = std::move(shape);
    spec.split_dim = -1;
    specs.push_back(spec);
  };
  add("wte", {kTableRows, kWidth});
  add("wpe", {8, kWidth});
  add("fc.weight", {kWidth, 48});
  add("odd", {37});
  return specs;
}

// Dyadic values (multiples of 1/8 below 2^8): every sum below is exact in float, so the reducer's
// result must equal the closed form bitwise whatever the order of additions.
float dense_value(int p, int64_t j, int step, int dp_rank) {
  return static_cast<float>(((p * 5 + j * 3 + step * 7 + dp_rank * 11) % 32 - 16) / 8.0);
}
float row_value(int64_t k, int64_t j, int step, int dp_rank) {
  return static_cast<float>(((k * 13 + j + step * 3 + dp_rank * 5) % 16 - 8) / 4.0);
}

// The rows rank dp_rank hands over in `step`: a duplicate pair (row 3 twice), a row only this
// rank has (10 + dp_rank), a row every rank has (7), and two ids outside the table (skipped).
std::vector<int32_t> row_ids(int dp_rank) {
  return {3, 10 + dp_rank, -1, 3, 7, static_cast<int32_t>(kTableRows)};
}

class SparseRowsTest : public ::testing::Test {
 protected:
  SparseRowsTest() : comm_(MPI_COMM_WORLD, "dp"), params_(layout(), 0, 1) {}
  int dp_rank() const { return comm_.rank(); }
  int dp_size() const { return comm_.size(); }
  ReducerOptions options(bool shard) const {
    ReducerOptions o;
    o.bucket_mb = 2048.0 / (1 << 20);  // a few buckets besides wte's
    o.shard = shard;
    o.sparse_param = 0;
    o.sparse_capacity = 8;
    o.sparse_width = kWidth;
    return o;
  }
  void fill(const core::Tensor& grads, int step) const {
    for (int p = 0; p < params_.size(); ++p) {
      float* g = params_.view(grads, p).f32();
      for (int64_t j = 0; j < params_.local_numel(p); ++j)
        g[j] = dense_value(p, j, step, dp_rank());
    }
  }
  // The dp average with every rank's rows added to wte, computed here in double.
  double expected(int p, int64_t j, int step) const {
    double sum = 0;
    for (int r = 0; r < dp_size(); ++r) {
      sum += dense_value(p, j, step, r);
      if (p != 0) continue;
      const std::vector<int32_t> ids = row_ids(r);
      for (size_t k = 0; k < ids.size(); ++k) {
        if (ids[k] == j / kWidth) sum += row_value(static_cast<int64_t>(k), j % kWidth, step, r);
      }
    }
    return sum / dp_size();
  }
  // One step: wte marked first (its dense part final), the rows added in two calls, the rest
  // marked in reverse. Returns the number of elements that differ from the closed form, within
  // `ranges` (all of the arena when empty).
  int64_t step(GradientReducer& reducer, const core::Tensor& grads, int step_index,
               const std::vector<parallel::Piece>& ranges = {}) {
    fill(grads, step_index);
    reducer.mark_ready(0);
    const std::vector<int32_t> ids = row_ids(dp_rank());
    std::vector<float> values(ids.size() * kWidth);
    for (size_t k = 0; k < ids.size(); ++k) {
      for (int64_t j = 0; j < kWidth; ++j) {
        values[k * kWidth + j] = row_value(static_cast<int64_t>(k), j, step_index, dp_rank());
      }
    }
    reducer.add_sparse_rows(ids.data(), values.data(), 2);
    for (int p = params_.size() - 1; p >= 1; --p) reducer.mark_ready(p);
    reducer.add_sparse_rows(ids.data() + 2, values.data() + 2 * kWidth,
                            static_cast<int64_t>(ids.size()) - 2);
    reducer.finish();
    int64_t bad = 0;
    for (int p = 0; p < params_.size(); ++p) {
      const float* g = params_.view(grads, p).f32();
      for (int64_t j = 0; j < params_.local_numel(p); ++j) {
        const int64_t at = params_.offset(p) + j;
        const bool inside = ranges.empty() ||
                            std::any_of(ranges.begin(), ranges.end(),
                                        [&](const auto& r) { return at >= r.begin && at < r.end; });
        if (inside && g[j] != static_cast<float>(expected(p, j, step_index))) ++bad;
      }
    }
    return bad;
  }

  MpiCommunicator comm_;
  ParamSet params_;
};

TEST_F(SparseRowsTest, RowsAddInRankOrderWithDuplicatesAndDisjointIds) {
  core::Tensor grads = params_.make_twin();
  GradientReducer reducer(params_, grads, comm_, options(false));
  // Bucket 0 is wte alone; the others keep the packing from the last parameter.
  EXPECT_EQ(reducer.bucket_params(0), std::vector<int>{0});
  EXPECT_EQ(reducer.bucket_params(1).front(), params_.size() - 1);
  for (int b = 1; b < reducer.num_buckets(); ++b) {
    for (int p : reducer.bucket_params(b)) EXPECT_NE(p, 0) << "bucket " << b;
  }
  for (int s = 0; s < 2; ++s) EXPECT_EQ(step(reducer, grads, s), 0) << "step " << s;
  // Identical on every rank, bitwise.
  std::vector<float> all(static_cast<size_t>(grads.numel() * dp_size()));
  comm_.all_gather(all.data(), grads.f32(), grads.numel());
  for (int r = 1; r < dp_size(); ++r) {
    EXPECT_TRUE(
        std::equal(all.begin(), all.begin() + grads.numel(), all.begin() + r * grads.numel()))
        << "rank " << r << " differs from rank 0";
  }
}

TEST_F(SparseRowsTest, ShardedReducerAddsRowsToTheOwnedPieces) {
  core::Tensor grads = params_.make_twin();
  GradientReducer reducer(params_, grads, comm_, options(true));
  for (int s = 0; s < 2; ++s) {
    EXPECT_EQ(step(reducer, grads, s, reducer.owned_ranges()), 0) << "step " << s;
  }
}

TEST_F(SparseRowsTest, WirePayloadCountsTheGatheredRowsAndMisuseIsRejected) {
  core::Tensor grads = params_.make_twin();
  ReducerOptions plain = options(false);
  plain.sparse_param = -1;
  GradientReducer dense(params_, grads, comm_, plain);
  GradientReducer sparse(params_, grads, comm_, options(false));
  const int64_t gathered = dp_size() == 1 ? 0 : dp_size() * 8 * (1 + kWidth) * 4;
  EXPECT_EQ(sparse.wire_bytes_per_step(), dense.wire_bytes_per_step() + gathered);
  // More rows than the capacity, or rows without a sparse parameter: a throw on every rank,
  // before any collective.
  std::vector<int32_t> ids(9, 1);
  std::vector<float> values(9 * kWidth, 1.0f);
  EXPECT_THROW(sparse.add_sparse_rows(ids.data(), values.data(), 9), Error);
  EXPECT_THROW(dense.add_sparse_rows(ids.data(), values.data(), 1), Error);
  ReducerOptions ragged = options(false);
  ragged.sparse_width = 5;  // 64 x 16 is not whole rows of 5
  EXPECT_THROW(GradientReducer(params_, grads, comm_, ragged), Error);
}

TEST(SparseRowsPay, OnlyWhenTheGatheredRowsAreAQuarterOfTheTable) {
  EXPECT_FALSE(parallel::sparse_rows_pay(1, 128, 50304));  // one rank: nothing to exchange
  EXPECT_TRUE(parallel::sparse_rows_pay(2, 128, 50304));   // 124M, b 2, T 64
  EXPECT_TRUE(parallel::sparse_rows_pay(4, 3144, 50304));  // exactly a quarter
  EXPECT_FALSE(parallel::sparse_rows_pay(4, 3145, 50304));
  EXPECT_FALSE(parallel::sparse_rows_pay(2, 8 * 1024, 50304));  // b 8, T 1024
}

// The GPT's gradients with the split wte against the dense path, at dp = world / tp for every
// tp: within relative 1e-6 of the largest gradient element, and identical on every dp rank; and
// the reducer's sum of gradients pre-divided by dp (ReducerOptions::average false) is the
// averaged path's bit for bit.
TEST(SparseEmbedding, GptGradientsEqualTheDensePathOnEveryGrid) {
  for (int tp = 1; tp <= world_size(); tp *= 2) {
    if (world_size() % tp != 0) continue;
    SCOPED_TRACE("tp " + std::to_string(tp));
    const core::Config c = small_config(tp);
    parallel::ProcessGrid grid(MPI_COMM_WORLD, tp);
    const int64_t B = 2, T = 16;
    std::vector<int32_t> tokens(B * T), targets(B * T);
    for (int64_t i = 0; i < B * T; ++i) {
      // Few distinct tokens, so rows repeat within and across ranks.
      const uint64_t g = static_cast<uint64_t>(grid.dp_rank() * B * T + i);
      tokens[i] = static_cast<int32_t>(core::philox_draw(11, 0, g)[0] % 40);
      targets[i] = static_cast<int32_t>(core::philox_draw(11, 1, g)[0] % 250);
    }
    // presum: the loss scale divides by dp and the reducer only sums (as the trainer runs it).
    auto gradients = [&](bool sparse, bool presum) {
      models::Gpt model(c.model, B, T, &grid.tp_comm());
      model.init_weights(5);
      const ParamSet& ps = model.param_set();
      ReducerOptions o;
      o.average = !presum;
      if (sparse) {
        o.sparse_param = ps.index_of("wte");
        o.sparse_capacity = B * T;
        o.sparse_width = ps.local_shape(o.sparse_param)[1];
      }
      GradientReducer reducer(ps, model.grads(), grid.dp_comm(), o);
      models::Gpt::SparseRowsHook hook;
      if (sparse) {
        hook = [&](int, const int32_t* ids, const float* values, int64_t n) {
          reducer.add_sparse_rows(ids, values, n);
        };
      }
      for (int s = 0; s < 2; ++s) {  // the second step checks the reset
        model.zero_grad();
        model.forward(tokens.data(), targets.data(), B, T);
        const int64_t divide = B * T * (presum ? grid.dp_size() : 1);
        model.backward(
            1.0f / static_cast<float>(divide), [&](int i) { reducer.mark_ready(i); }, hook);
        reducer.finish();
      }
      const float* g = model.grads().f32();
      return std::vector<float>(g, g + model.grads().numel());
    };
    const std::vector<float> dense = gradients(false, false), sparse = gradients(true, true);
    ASSERT_EQ(dense.size(), sparse.size());
    // dp is a power of two here: dividing the loss scale by it is exact, and backward is linear
    // in it, so the sum of the pre-divided gradients is the average bit for bit.
    EXPECT_TRUE(gradients(false, true) == dense) << "pre-divided sum differs from the average";
    double largest = 0, worst = 0;
    for (size_t i = 0; i < dense.size(); ++i) {
      largest = std::max(largest, std::fabs(static_cast<double>(dense[i])));
      worst = std::max(worst, std::fabs(static_cast<double>(dense[i]) - sparse[i]));
    }
    ASSERT_GT(largest, 0.0);
    EXPECT_LT(worst / largest, 1e-6);
    const int64_t n = static_cast<int64_t>(sparse.size());
    std::vector<float> all(static_cast<size_t>(n * grid.dp_size()));
    grid.dp_comm().all_gather(all.data(), sparse.data(), n);
    for (int r = 1; r < grid.dp_size(); ++r) {
      EXPECT_TRUE(std::equal(all.begin(), all.begin() + n, all.begin() + r * n))
          << "dp rank " << r << " differs from dp rank 0";
    }
  }
}

// Training with the split forced on (small_config's rows are too many for auto): the losses of a
// 1 x 1 run within the layout tolerance on every grid, with ZeRO-1 and sequence parallelism too.
TEST(SparseEmbedding, TrainingLossesMatchOneRankOnEveryGrid) {
  const std::vector<double> reference = run(small_config(1), MPI_COMM_SELF);
  for (int tp = 1; tp <= world_size(); tp *= 2) {
    if (world_size() % tp != 0) continue;
    core::Config c = small_config(tp);
    c.parallel.sparse_embedding = "on";
    c.optim.zero = tp == 1 ? 1 : 0;
    c.parallel.sequence_parallel = tp > 1;
    const std::vector<double> losses = run(c, MPI_COMM_WORLD);
    ASSERT_EQ(losses.size(), reference.size());
    EXPECT_LT(max_rel_diff(losses, reference), 1e-5)
        << "grid dp " << world_size() / tp << " x tp " << tp;
  }
}

}  // namespace
}  // namespace tessera
