// The vocab-parallel cross-entropy passes against their CPU twin (backends/cpu/crossentropy.h, in
// double on the same logits): every pass's output, padding columns left zero, ignored rows, the
// in-place backward, two shards with the tp reductions done by hand matching the unsplit loss,
// and the bf16-logits forms. Sizes: N = 37 rows of 100 real columns in a row of 104, and GPT-2's
// vocabulary (N = 64, V = 50257 padded to 50304).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "backends/cpu/crossentropy.h"
#include "backends/cuda/crossentropy.h"
#include "core/bf16.h"
#include "cuda_test_util.h"

namespace tessera::backends::cuda {
namespace {

using testing::DeviceArray;
using testing::random_floats;
using testing::rel_error;
using testing::to_double;
using testing::to_float;

// fp32 against double. Row sums run over up to 50257 terms as a tree of 256 strided partials
// then shuffles: ~log2(n) · 6e-8 plus expf's 2 ulp, far under the project's fp32 bar of 1e-5.
constexpr double kF32Tolerance = 1e-5;
// bf16 dlogits: each rounded once to 8 significant bits (2^-9 relative at most).
constexpr double kBf16OutputTolerance = 4e-3;

struct Sizes {
  int64_t N, V, ld;  // V real columns in rows of ld
};

// Logits (N, ld) with random real columns and random padding (never read, so it may hold
// anything: large values here, so a kernel that reads padding gets a visibly wrong max or sum);
// targets in [0, V) with every fifth row ignored (-1); dlosses random and nonzero.
struct Inputs {
  Inputs(const Sizes& s, uint32_t seed)
      : logits(random_floats(s.N * s.ld, seed, 3.0f)), targets(s.N), dlosses(s.N) {
    for (int64_t n = 0; n < s.N; ++n) {
      for (int64_t v = s.V; v < s.ld; ++v) logits[n * s.ld + v] = 1e3f;
    }
    std::mt19937 gen(seed + 1);
    std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(s.V - 1));
    std::uniform_real_distribution<float> weight(0.5f, 1.5f);
    for (int64_t n = 0; n < s.N; ++n) {
      targets[n] = n % 5 == 3 ? -1 : token(gen);
      dlosses[n] = weight(gen) / static_cast<float>(s.N);
    }
  }
  std::vector<float> logits;
  std::vector<int32_t> targets;
  std::vector<float> dlosses;
};

// The CPU twin in double, tp = 1.
struct Reference {
  std::vector<double> row_max, sumexp, target_logit, losses, dlogits;
};
Reference cpu_reference(const std::vector<float>& logits, const Inputs& in, const Sizes& s) {
  const auto z = to_double(logits);
  const auto dl = to_double(in.dlosses);
  Reference r{std::vector<double>(s.N), std::vector<double>(s.N), std::vector<double>(s.N),
              std::vector<double>(s.N), std::vector<double>(s.N * s.ld)};
  cpu::xent_row_max(r.row_max.data(), z.data(), s.N, s.V, s.ld);
  cpu::xent_row_sumexp_target(r.sumexp.data(), r.target_logit.data(), z.data(), in.targets.data(),
                              r.row_max.data(), s.N, s.V, s.ld, int64_t{0});
  cpu::xent_loss(r.losses.data(), r.row_max.data(), r.sumexp.data(), r.target_logit.data(),
                 in.targets.data(), s.N);
  cpu::xent_backward(r.dlogits.data(), z.data(), in.targets.data(), r.row_max.data(),
                     r.sumexp.data(), dl.data(), s.N, s.V, s.ld, int64_t{0});
  return r;
}

// Every padding column of every row is exactly 0.
bool padding_is_zero(const std::vector<float>& dlogits, const Sizes& s) {
  for (int64_t n = 0; n < s.N; ++n) {
    for (int64_t v = s.V; v < s.ld; ++v) {
      if (dlogits[n * s.ld + v] != 0.0f) return false;
    }
  }
  return true;
}

class CudaCrossentropy : public ::testing::TestWithParam<Sizes> {};

TEST_P(CudaCrossentropy, EveryPassMatchesTheCpuTwin) {
  const Sizes s = GetParam();
  const Inputs in(s, 7);
  const Reference ref = cpu_reference(in.logits, in, s);
  DeviceArray<float> logits(in.logits), dlosses(in.dlosses);
  DeviceArray<int32_t> targets(in.targets);
  DeviceArray<float> row_max(s.N), sumexp(s.N), target_logit(s.N), losses(s.N);
  DeviceArray<float> dlogits(s.N * s.ld);
  for (auto* a : {&row_max, &sumexp, &target_logit, &losses, &dlogits}) a->poison();

  xent_row_max(row_max.get(), logits.get(), s.N, s.V, s.ld, nullptr);
  xent_row_sumexp_target(sumexp.get(), target_logit.get(), logits.get(), targets.get(),
                         row_max.get(), s.N, s.V, s.ld, 0, nullptr);
  xent_loss(losses.get(), row_max.get(), sumexp.get(), target_logit.get(), targets.get(), s.N,
            nullptr);
  xent_backward(dlogits.get(), logits.get(), targets.get(), row_max.get(), sumexp.get(),
                dlosses.get(), s.N, s.V, s.ld, 0, nullptr);

  // A max and a copied logit are exact in any order.
  EXPECT_EQ(row_max.download(), to_float(ref.row_max));
  EXPECT_EQ(target_logit.download(), to_float(ref.target_logit));
  EXPECT_LE(rel_error(sumexp.download(), to_float(ref.sumexp)), kF32Tolerance) << "sumexp";
  EXPECT_LE(rel_error(losses.download(), to_float(ref.losses)), kF32Tolerance) << "losses";
  const auto got = dlogits.download();
  EXPECT_LE(rel_error(got, to_float(ref.dlogits)), kF32Tolerance) << "dlogits";
  EXPECT_TRUE(padding_is_zero(got, s));
  // Ignored rows: zero loss and an all-zero gradient row.
  const auto got_losses = losses.download();
  for (int64_t n = 0; n < s.N; ++n) {
    if (in.targets[n] >= 0) continue;
    EXPECT_EQ(got_losses[n], 0.0f) << "row " << n;
    EXPECT_TRUE(std::all_of(got.begin() + n * s.ld, got.begin() + (n + 1) * s.ld,
                            [](float x) { return x == 0.0f; }))
        << "row " << n;
  }
}

TEST_P(CudaCrossentropy, BackwardInPlaceMatchesOutOfPlace) {
  const Sizes s = GetParam();
  const Inputs in(s, 17);
  const Reference ref = cpu_reference(in.logits, in, s);
  DeviceArray<float> logits(in.logits), dlosses(in.dlosses);
  DeviceArray<int32_t> targets(in.targets);
  DeviceArray<float> row_max(to_float(ref.row_max)), sumexp(to_float(ref.sumexp));
  xent_backward(logits.get(), logits.get(), targets.get(), row_max.get(), sumexp.get(),
                dlosses.get(), s.N, s.V, s.ld, 0, nullptr);
  const auto got = logits.download();
  EXPECT_LE(rel_error(got, to_float(ref.dlogits)), kF32Tolerance);
  EXPECT_TRUE(padding_is_zero(got, s));
}

// Two tp ranks, each holding half of the padded vocabulary (V_local = ld / 2 columns, the last
// shard's tail being padding), with the all-reduces of max and sums done here as the
// communicator would: every rank's losses equal the unsplit ones, and the shards' dlogits are
// the unsplit dlogits' columns.
TEST_P(CudaCrossentropy, TwoShardsWithReductionsMatchTheUnsplitLoss) {
  const Sizes s = GetParam();
  ASSERT_EQ(s.ld % 2, 0);
  const Inputs in(s, 27);
  const Reference ref = cpu_reference(in.logits, in, s);
  const int64_t V_local = s.ld / 2;
  struct Shard {
    int64_t vocab_start, n_cols;
  };
  const Shard shards[2] = {{0, std::min(V_local, s.V)},
                           {V_local, std::max<int64_t>(0, s.V - V_local)}};

  std::vector<std::vector<float>> shard_logits(2, std::vector<float>(s.N * V_local));
  for (int r = 0; r < 2; ++r) {
    for (int64_t n = 0; n < s.N; ++n) {
      std::copy_n(in.logits.begin() + n * s.ld + shards[r].vocab_start, V_local,
                  shard_logits[r].begin() + n * V_local);
    }
  }
  DeviceArray<float> logits0(shard_logits[0]), logits1(shard_logits[1]);
  DeviceArray<float>* logits[2] = {&logits0, &logits1};
  DeviceArray<int32_t> targets(in.targets);
  DeviceArray<float> dlosses(in.dlosses);
  DeviceArray<float> row_max(s.N), sumexp(s.N), target_logit(s.N), losses(s.N);

  // Pass 1 on each rank, then all_reduce MAX.
  std::vector<float> global_max(s.N, -INFINITY);
  for (int r = 0; r < 2; ++r) {
    row_max.poison();
    xent_row_max(row_max.get(), logits[r]->get(), s.N, shards[r].n_cols, V_local, nullptr);
    const auto local = row_max.download();
    for (int64_t n = 0; n < s.N; ++n) global_max[n] = std::max(global_max[n], local[n]);
  }
  EXPECT_EQ(global_max, to_float(ref.row_max));
  row_max.upload(global_max);

  // Pass 2 on each rank, then all_reduce SUM of sumexp and target_logit.
  std::vector<float> global_sumexp(s.N, 0.0f), global_target(s.N, 0.0f);
  for (int r = 0; r < 2; ++r) {
    sumexp.poison();
    target_logit.poison();
    xent_row_sumexp_target(sumexp.get(), target_logit.get(), logits[r]->get(), targets.get(),
                           row_max.get(), s.N, shards[r].n_cols, V_local, shards[r].vocab_start,
                           nullptr);
    const auto se = sumexp.download(), tl = target_logit.download();
    for (int64_t n = 0; n < s.N; ++n) {
      global_sumexp[n] += se[n];
      global_target[n] += tl[n];
    }
  }
  EXPECT_LE(rel_error(global_sumexp, to_float(ref.sumexp)), kF32Tolerance) << "sumexp";
  EXPECT_EQ(global_target, to_float(ref.target_logit));
  sumexp.upload(global_sumexp);
  target_logit.upload(global_target);

  // Pass 3: the same losses on every rank.
  losses.poison();
  xent_loss(losses.get(), row_max.get(), sumexp.get(), target_logit.get(), targets.get(), s.N,
            nullptr);
  EXPECT_LE(rel_error(losses.download(), to_float(ref.losses)), kF32Tolerance) << "losses";

  // Pass 4: each shard's dlogits are the unsplit dlogits' columns of that shard.
  for (int r = 0; r < 2; ++r) {
    DeviceArray<float> dlogits(s.N * V_local);
    dlogits.poison();
    xent_backward(dlogits.get(), logits[r]->get(), targets.get(), row_max.get(), sumexp.get(),
                  dlosses.get(), s.N, shards[r].n_cols, V_local, shards[r].vocab_start, nullptr);
    std::vector<float> expected(s.N * V_local);
    for (int64_t n = 0; n < s.N; ++n) {
      for (int64_t v = 0; v < V_local; ++v) {
        const int64_t global_col = shards[r].vocab_start + v;
        expected[n * V_local + v] = static_cast<float>(ref.dlogits[n * s.ld + global_col]);
      }
    }
    EXPECT_LE(rel_error(dlogits.download(), expected), kF32Tolerance) << "shard " << r;
  }
}

TEST_P(CudaCrossentropy, Bf16LogitsMatchTheCpuTwinOnTheSameValues) {
  const Sizes s = GetParam();
  const Inputs in(s, 37);
  std::vector<uint16_t> logits_h(in.logits.size());
  std::vector<float> rounded(in.logits.size());
  for (size_t i = 0; i < logits_h.size(); ++i) {
    logits_h[i] = core::to_bf16(in.logits[i]);
    rounded[i] = core::from_bf16(logits_h[i]);
  }
  const Reference ref = cpu_reference(rounded, in, s);
  DeviceArray<uint16_t> logits(logits_h), dlogits(s.N * s.ld);
  DeviceArray<float> dlosses(in.dlosses);
  DeviceArray<int32_t> targets(in.targets);
  DeviceArray<float> row_max(s.N), sumexp(s.N), target_logit(s.N), losses(s.N);
  for (auto* a : {&row_max, &sumexp, &target_logit, &losses}) a->poison();
  dlogits.poison();

  xent_row_max_bf16(row_max.get(), logits.get(), s.N, s.V, s.ld, nullptr);
  xent_row_sumexp_target_bf16(sumexp.get(), target_logit.get(), logits.get(), targets.get(),
                              row_max.get(), s.N, s.V, s.ld, 0, nullptr);
  xent_loss(losses.get(), row_max.get(), sumexp.get(), target_logit.get(), targets.get(), s.N,
            nullptr);
  xent_backward_bf16(dlogits.get(), logits.get(), targets.get(), row_max.get(), sumexp.get(),
                     dlosses.get(), s.N, s.V, s.ld, 0, nullptr);

  // Statistics are fp32 arithmetic on the same bf16 values: the fp32 bar.
  EXPECT_EQ(row_max.download(), to_float(ref.row_max));
  EXPECT_EQ(target_logit.download(), to_float(ref.target_logit));
  EXPECT_LE(rel_error(sumexp.download(), to_float(ref.sumexp)), kF32Tolerance) << "sumexp";
  EXPECT_LE(rel_error(losses.download(), to_float(ref.losses)), kF32Tolerance) << "losses";
  std::vector<float> got;
  for (uint16_t b : dlogits.download()) got.push_back(core::from_bf16(b));
  EXPECT_LE(rel_error(got, to_float(ref.dlogits)), kBf16OutputTolerance) << "dlogits";
  EXPECT_TRUE(padding_is_zero(got, s));
}

INSTANTIATE_TEST_SUITE_P(Sizes, CudaCrossentropy,
                         ::testing::Values(Sizes{37, 100, 104}, Sizes{64, 50257, 50304}),
                         [](const ::testing::TestParamInfo<Sizes>& param_info) {
                           return "N" + std::to_string(param_info.param.N) + "_V" +
                                  std::to_string(param_info.param.V) + "_ld" +
                                  std::to_string(param_info.param.ld);
                         });

TEST(CudaCrossentropyEdges, NoRealColumnsGiveMinusInfinityAndZeroSum) {
  const int64_t N = 5, ld = 8;
  DeviceArray<float> logits(random_floats(N * ld, 3));
  DeviceArray<int32_t> targets(std::vector<int32_t>{0, 1, 2, 3, -1});
  DeviceArray<float> row_max(N), sumexp(N), target_logit(N);
  row_max.poison();
  xent_row_max(row_max.get(), logits.get(), N, 0, ld, nullptr);
  for (float m : row_max.download()) EXPECT_EQ(m, -INFINITY);
  // A rank with no columns, given a finite global max, adds nothing to either sum.
  row_max.upload(std::vector<float>(N, 1.0f));
  sumexp.poison();
  target_logit.poison();
  xent_row_sumexp_target(sumexp.get(), target_logit.get(), logits.get(), targets.get(),
                         row_max.get(), N, 0, ld, 0, nullptr);
  EXPECT_EQ(sumexp.download(), std::vector<float>(N, 0.0f));
  EXPECT_EQ(target_logit.download(), std::vector<float>(N, 0.0f));
}

TEST(CudaCrossentropyEdges, RejectsMoreColumnsThanTheRowHolds) {
  DeviceArray<float> buf(16);
  EXPECT_THROW(xent_row_max(buf.get(), buf.get(), 2, 9, 8, nullptr), tessera::Error);
}

}  // namespace
}  // namespace tessera::backends::cuda
