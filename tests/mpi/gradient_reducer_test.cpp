// GradientReducer over MPI_COMM_WORLD as the dp group (1, 2 or 4 ranks): the fused, bucketed
// average equals the per-tensor all-reduce average and a closed form from rank numbers, for any
// bucket cap, mark order, unmarked parameters, overlap on or off, bf16 wire, and across steps.
#include "parallel/gradient_reducer.h"

#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "parallel/communicator.h"
#include "parallel/timeline.h"
#include "params/param_spec.h"

namespace tessera::parallel {
namespace {

using params::ParamSet;
using params::ParamSpec;

// A small layout: matrices, vectors and sizes that are not multiples of the arena's 16-float
// alignment (so buckets span padding).
std::vector<ParamSpec> small_specs() {
  std::vector<ParamSpec> specs;
  auto add = [&specs](const std::string& name, core::Shape shape) {
    ParamSpec spec;
    spec.name = name;
    spec.global_shape = std::move(shape);
    spec.split_dim = -1;
    specs.push_back(spec);
  };
  add("wte", {64, 16});
  add("wpe", {8, 16});
  add("ln.weight", {16});
  add("ln.bias", {16});
  add("fc.weight", {16, 48});
  add("fc.bias", {48});
  add("proj.weight", {48, 16});
  add("proj.bias", {16});
  add("odd", {37});
  add("one", {1});
  return specs;
}

// Exact values: multiples of 1/8 below 2^10, so every sum over ranks (in any order) is exact and
// the dp average has the closed form base + slope * (dp_size - 1) / 2.
double dyadic_base(int p, int64_t j, int step) {
  return ((p * 7 + j * 3 + step * 5) % 64 - 32) / 8.0;
}
double dyadic_slope(int p, int64_t j) { return ((j + p) % 5 + 1) / 4.0; }
double dyadic_value(int p, int64_t j, int step, int dp_rank) {
  return dyadic_base(p, j, step) + dp_rank * dyadic_slope(p, j);
}
double dyadic_average(int p, int64_t j, int step, int dp_size) {
  return dyadic_base(p, j, step) + dyadic_slope(p, j) * (dp_size - 1) / 2.0;
}

// Generic values (no short binary expansion), same sign on every rank: the relative error of a
// bf16 round trip is then bounded without cancellation.
double generic_base(int p, int64_t j) { return (1.5 + std::sin(0.37 * j + 1.3 * p)) * 1.0137; }
double generic_value(int p, int64_t j, int dp_rank) {
  return generic_base(p, j) * (1.0 + 0.125 * dp_rank);
}
double generic_average(int p, int64_t j, int dp_size) {
  return generic_base(p, j) * (1.0 + 0.125 * (dp_size - 1) / 2.0);
}

template <typename F>
void fill(const ParamSet& params, const core::Tensor& grads, F value) {
  for (int p = 0; p < params.size(); ++p) {
    float* g = params.view(grads, p).f32();
    for (int64_t j = 0; j < params.local_numel(p); ++j) g[j] = static_cast<float>(value(p, j));
  }
}

// Number of elements whose gradient differs from `expected(p, j)` (as float), bitwise.
template <typename F>
int64_t count_mismatches(const ParamSet& params, const core::Tensor& grads, F expected) {
  int64_t bad = 0;
  for (int p = 0; p < params.size(); ++p) {
    const float* g = params.view(grads, p).f32();
    for (int64_t j = 0; j < params.local_numel(p); ++j) {
      if (g[j] != static_cast<float>(expected(p, j))) ++bad;
    }
  }
  return bad;
}

void mark_all_reverse(GradientReducer& reducer, int n) {
  for (int p = n - 1; p >= 0; --p) reducer.mark_ready(p);
}

class GradientReducerTest : public ::testing::Test {
 protected:
  GradientReducerTest() : comm_(MPI_COMM_WORLD, "dp"), params_(small_specs(), 0, 1) {}
  int dp_rank() const { return comm_.rank(); }
  int dp_size() const { return comm_.size(); }

  MpiCommunicator comm_;
  ParamSet params_;
};

TEST_F(GradientReducerTest, FusedEqualsPerTensorAverageForSeveralCaps) {
  const int n = params_.size();
  // Reference: one all_reduce_avg per tensor.
  core::Tensor reference = params_.make_twin();
  fill(params_, reference, [&](int p, int64_t j) { return dyadic_value(p, j, 0, dp_rank()); });
  for (int p = 0; p < n; ++p) {
    comm_.all_reduce_avg(params_.view(reference, p).f32(), params_.local_numel(p));
  }
  ASSERT_EQ(count_mismatches(params_, reference,
                             [&](int p, int64_t j) { return dyadic_average(p, j, 0, dp_size()); }),
            0);

  // tiny cap: one bucket per parameter; 2 KiB: a few; huge: one bucket.
  const std::vector<std::pair<double, int>> caps = {{1e-9, n}, {2048.0 / (1 << 20), -1}, {1e6, 1}};
  for (const auto& [bucket_mb, expected_buckets] : caps) {
    SCOPED_TRACE("bucket_mb " + std::to_string(bucket_mb));
    core::Tensor grads = params_.make_twin();
    fill(params_, grads, [&](int p, int64_t j) { return dyadic_value(p, j, 0, dp_rank()); });
    GradientReducer reducer(params_, grads, comm_, ReducerOptions{bucket_mb, true, false});
    if (expected_buckets > 0) {
      EXPECT_EQ(reducer.num_buckets(), expected_buckets);
    } else {
      EXPECT_GT(reducer.num_buckets(), 1);
      EXPECT_LT(reducer.num_buckets(), n);
    }
    mark_all_reverse(reducer, n);
    reducer.finish();
    for (int p = 0; p < n; ++p) {
      EXPECT_EQ(std::memcmp(params_.view(grads, p).f32(), params_.view(reference, p).f32(),
                            params_.local_numel(p) * sizeof(float)),
                0)
          << "parameter " << params_.specs()[p].name;
    }
  }
}

TEST_F(GradientReducerTest, AnyMarkOrderAndUnmarkedParametersGiveTheAverage) {
  const int n = params_.size();
  for (double bucket_mb : {1e-9, 2048.0 / (1 << 20), 1e6}) {
    SCOPED_TRACE("bucket_mb " + std::to_string(bucket_mb));
    core::Tensor grads = params_.make_twin();
    fill(params_, grads, [&](int p, int64_t j) { return dyadic_value(p, j, 0, dp_rank()); });
    GradientReducer reducer(params_, grads, comm_, ReducerOptions{bucket_mb, true, false});
    // A different order on every rank; parameters 1, 4 and 7 are left to finish().
    std::vector<int> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937(1234 + 17 * dp_rank()));
    for (int p : order) {
      if (p % 3 != 1) reducer.mark_ready(p);
    }
    reducer.finish();
    EXPECT_EQ(
        count_mismatches(params_, grads,
                         [&](int p, int64_t j) { return dyadic_average(p, j, 0, dp_size()); }),
        0);
  }
}

TEST_F(GradientReducerTest, OverlapOffIsBitwiseEqualToOverlapOn) {
  const int n = params_.size();
  core::Tensor on = params_.make_twin(), off = params_.make_twin();
  // Generic values: here the sum order matters, so equality means the same collectives ran.
  auto value = [&](int p, int64_t j) {
    return generic_value(p, j, dp_rank()) * std::cos(0.11 * j + dp_rank());
  };
  fill(params_, on, value);
  fill(params_, off, value);
  const double bucket_mb = 2048.0 / (1 << 20);
  GradientReducer reducer_on(params_, on, comm_, ReducerOptions{bucket_mb, true, false});
  GradientReducer reducer_off(params_, off, comm_, ReducerOptions{bucket_mb, false, false});
  mark_all_reverse(reducer_on, n);
  reducer_on.finish();
  mark_all_reverse(reducer_off, n);
  reducer_off.finish();
  for (int p = 0; p < n; ++p) {
    EXPECT_EQ(std::memcmp(params_.view(on, p).f32(), params_.view(off, p).f32(),
                          params_.local_numel(p) * sizeof(float)),
              0)
        << "parameter " << params_.specs()[p].name;
  }
  // And both are the average (to f32 rounding of the sum).
  for (int p = 0; p < n; ++p) {
    const float* g = params_.view(on, p).f32();
    for (int64_t j = 0; j < params_.local_numel(p); ++j) {
      double sum = 0.0;
      for (int r = 0; r < dp_size(); ++r) sum += generic_value(p, j, r) * std::cos(0.11 * j + r);
      ASSERT_NEAR(g[j], sum / dp_size(), 1e-5) << "parameter " << p << " element " << j;
    }
  }
}

TEST_F(GradientReducerTest, Bf16CompressionIsWithinBf16Tolerance) {
  const int n = params_.size();
  core::Tensor exact = params_.make_twin(), compressed = params_.make_twin();
  fill(params_, exact, [&](int p, int64_t j) { return generic_value(p, j, dp_rank()); });
  fill(params_, compressed, [&](int p, int64_t j) { return generic_value(p, j, dp_rank()); });
  const double bucket_mb = 2048.0 / (1 << 20);
  GradientReducer f32(params_, exact, comm_, ReducerOptions{bucket_mb, true, false});
  GradientReducer bf16(params_, compressed, comm_, ReducerOptions{bucket_mb, true, true});
  EXPECT_EQ(bf16.num_buckets(), f32.num_buckets());
  EXPECT_EQ(bf16.wire_bytes_per_step() * 2, f32.wire_bytes_per_step());
  mark_all_reverse(f32, n);
  f32.finish();
  mark_all_reverse(bf16, n);
  bf16.finish();

  int64_t differ = 0, total = 0;
  double worst = 0.0;
  for (int p = 0; p < n; ++p) {
    const float* a = params_.view(exact, p).f32();
    const float* b = params_.view(compressed, p).f32();
    for (int64_t j = 0; j < params_.local_numel(p); ++j, ++total) {
      const double expected = generic_average(p, j, dp_size());
      worst = std::max(worst, std::abs(b[j] - expected) / std::abs(expected));
      ASSERT_NEAR(a[j], expected, 1e-6 * std::abs(expected)) << "f32 parameter " << p;
      if (a[j] != b[j]) ++differ;
    }
  }
  // Two bf16 roundings (2^-9 relative each) and a bf16 sum: within 1e-2.
  EXPECT_LT(worst, 1e-2);
  if (dp_size() == 1) {
    // Nothing goes on the wire: the gradient is its own average, not rounded.
    EXPECT_EQ(differ, 0);
    EXPECT_EQ(bf16.wire_bytes_per_step(), 0);
  } else {
    // Generic values lose bits in bf16: most elements differ from the f32 average.
    EXPECT_GT(differ, total / 2);
    EXPECT_GT(worst, 1e-5);
  }
}

TEST_F(GradientReducerTest, ConsecutiveStepsResetTheBuckets) {
  const int n = params_.size();
  core::Tensor grads = params_.make_twin();
  GradientReducer reducer(params_, grads, comm_, ReducerOptions{2048.0 / (1 << 20), true, false});
  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    fill(params_, grads, [&](int p, int64_t j) { return dyadic_value(p, j, step, dp_rank()); });
    if (step == 1) {
      for (int p = 0; p < n; ++p) reducer.mark_ready(p);  // forward order this time
    } else if (step == 0) {
      mark_all_reverse(reducer, n);
    }  // step 2: nothing marked, finish() does it all
    reducer.finish();
    EXPECT_EQ(
        count_mismatches(params_, grads,
                         [&](int p, int64_t j) { return dyadic_average(p, j, step, dp_size()); }),
        0);
  }
}

// Sizes (floats) 1024, 1024, 2048, 512, 4096 with a 12 KiB cap, packed from the last:
// {4} (16 KiB alone), {3, 2} (2 + 8 KiB; adding 1 would exceed), {1, 0} (8 KiB).
TEST_F(GradientReducerTest, BucketsFollowTheKnownLayout) {
  std::vector<ParamSpec> specs;
  for (int64_t numel : {1024, 1024, 2048, 512, 4096}) {
    ParamSpec spec;
    spec.name = "p" + std::to_string(specs.size());
    spec.global_shape = {numel};
    specs.push_back(spec);
  }
  ParamSet params(specs, 0, 1);
  core::Tensor grads = params.make_twin();
  GradientReducer reducer(params, grads, comm_, ReducerOptions{12288.0 / (1 << 20), true, false});
  ASSERT_EQ(reducer.num_buckets(), 3);
  EXPECT_EQ(reducer.bucket_params(0), (std::vector<int>{4}));
  EXPECT_EQ(reducer.bucket_params(1), (std::vector<int>{3, 2}));
  EXPECT_EQ(reducer.bucket_params(2), (std::vector<int>{1, 0}));
  EXPECT_EQ(reducer.wire_bytes_per_step(),
            dp_size() == 1 ? 0 : (1024 + 1024 + 2048 + 512 + 4096) * 4);
  // An 18 KiB cap is reached exactly by {4, 3} (16 + 2 KiB; the cap is inclusive): {2, 1, 0}.
  GradientReducer two(params, grads, comm_, ReducerOptions{18432.0 / (1 << 20), true, false});
  ASSERT_EQ(two.num_buckets(), 2);
  EXPECT_EQ(two.bucket_params(0), (std::vector<int>{4, 3}));
  EXPECT_EQ(two.bucket_params(1), (std::vector<int>{2, 1, 0}));
}

TEST_F(GradientReducerTest, TimelineHoldsOneEventPerBucketPerStep) {
  const int n = params_.size();
  core::Tensor grads = params_.make_twin();
  Timeline timeline(dp_rank());
  GradientReducer reducer(params_, grads, comm_, ReducerOptions{2048.0 / (1 << 20), true, false},
                          &timeline);
  const int steps = 2;
  for (int step = 0; step < steps; ++step) {
    fill(params_, grads, [&](int p, int64_t j) { return dyadic_value(p, j, step, dp_rank()); });
    mark_all_reverse(reducer, n);
    reducer.finish();
  }
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("tessera-reducer-timeline-" + std::to_string(getpid()) + ".json"))
                               .string();
  ASSERT_TRUE(timeline.write(path).ok());
  std::ifstream in(path);
  const nlohmann::json trace = nlohmann::json::parse(in);
  in.close();
  std::filesystem::remove(path);

  std::map<std::string, int> counts;
  for (const auto& event : trace.at("traceEvents")) {
    if (event.at("ph") == "X") counts[event.at("name").get<std::string>()] += 1;
  }
  EXPECT_EQ(counts["reducer.finish"], steps);
  const int expected_per_bucket = dp_size() == 1 ? 0 : steps;  // one rank: nothing is reduced
  int bucket_events = 0;
  for (int b = 0; b < reducer.num_buckets(); ++b) {
    const int c = counts["bucket " + std::to_string(b) + " allreduce"];
    EXPECT_EQ(c, expected_per_bucket) << "bucket " << b;
    bucket_events += c;
  }
  EXPECT_EQ(static_cast<int>(timeline.size()), steps + bucket_events);
}

TEST_F(GradientReducerTest, WithoutAveragingFinishLeavesTheSum) {
  const int n = params_.size();
  core::Tensor grads = params_.make_twin();
  ReducerOptions options{2048.0 / (1 << 20), true, false};
  options.average = false;
  GradientReducer reducer(params_, grads, comm_, options);
  for (int step = 0; step < 2; ++step) {
    fill(params_, grads, [&](int p, int64_t j) { return dyadic_value(p, j, step, dp_rank()); });
    mark_all_reverse(reducer, n);
    reducer.finish();
    EXPECT_EQ(count_mismatches(params_, grads,
                               [&](int p, int64_t j) {
                                 return dyadic_average(p, j, step, dp_size()) * dp_size();
                               }),
              0)
        << "step " << step;
  }
}

TEST_F(GradientReducerTest, MisuseIsRejected) {
  core::Tensor grads = params_.make_twin();
  // overlap off: marking starts no collective, so a throw on every rank leaves none pending.
  GradientReducer reducer(params_, grads, comm_, ReducerOptions{25.0, false, false});
  EXPECT_THROW(reducer.mark_ready(params_.size()), Error);
  EXPECT_THROW(reducer.mark_ready(-1), Error);
  reducer.mark_ready(0);
  EXPECT_THROW(reducer.mark_ready(0), Error);
  core::Tensor short_arena = core::Tensor::zeros({params_.total_local_numel() - 1});
  EXPECT_THROW(GradientReducer(params_, short_arena, comm_, ReducerOptions{}), Error);
}

}  // namespace
}  // namespace tessera::parallel
