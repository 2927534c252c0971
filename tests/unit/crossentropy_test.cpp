// Vocab-parallel cross-entropy passes: loss against a direct log-softmax, ignored targets,
// padding columns, backward against central differences, and tp = 2/4/8 shards simulated
// in-process agreeing with one shard.
#include "backends/cpu/crossentropy.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "grad_check.h"

namespace tessera::backends::cpu {
namespace {

using testing::cast_vector;
using testing::expect_all_close;
using testing::random_vector;

// Result of the four passes on one shard (tp = 1): per-row statistics, losses and dlogits.
template <typename T>
struct Xent {
  std::vector<T> row_max, sumexp, target_logit, losses, dlogits;
};

template <typename T>
Xent<T> run_single_shard(const std::vector<T>& logits, const std::vector<int32_t>& targets,
                         const std::vector<T>& dlosses, int64_t N, int64_t n_cols, int64_t ld) {
  Xent<T> x;
  x.row_max.assign(N, T(0));
  x.sumexp.assign(N, T(0));
  x.target_logit.assign(N, T(0));
  x.losses.assign(N, T(0));
  x.dlogits.assign(N * ld, std::numeric_limits<T>::quiet_NaN());
  xent_row_max(x.row_max.data(), logits.data(), N, n_cols, ld);
  xent_row_sumexp_target(x.sumexp.data(), x.target_logit.data(), logits.data(), targets.data(),
                         x.row_max.data(), N, n_cols, ld, 0);
  xent_loss(x.losses.data(), x.row_max.data(), x.sumexp.data(), x.target_logit.data(),
            targets.data(), N);
  xent_backward(x.dlogits.data(), logits.data(), targets.data(), x.row_max.data(), x.sumexp.data(),
                dlosses.data(), N, n_cols, ld, 0);
  return x;
}

// -log softmax(z)[target] straight from the definition, in double.
double direct_loss(const double* z, int64_t V, int32_t target) {
  double m = z[0];
  for (int64_t v = 1; v < V; ++v) m = std::max(m, z[v]);
  double s = 0;
  for (int64_t v = 0; v < V; ++v) s += std::exp(z[v] - m);
  return -(z[target] - m - std::log(s));
}

constexpr int64_t kN = 7;
constexpr int64_t kCeVocab = 37;  // real vocabulary
constexpr int64_t kLd = 40;       // padded row length
const std::vector<int32_t> kTargets = {0, 36, 5, -1, 17, 20, -100};

// Logits with NaN in the padding columns: any read of them poisons the results.
std::vector<double> padded_logits(uint64_t seed, double scale = 2.0, double offset = 0.0) {
  std::vector<double> logits = random_vector(kN * kLd, seed, scale, offset);
  for (int64_t n = 0; n < kN; ++n) {
    for (int64_t v = kCeVocab; v < kLd; ++v)
      logits[n * kLd + v] = std::numeric_limits<double>::quiet_NaN();
  }
  return logits;
}

TEST(CrossEntropy, LossMatchesDirectLogSoftmax) {
  // offset 1000: exp(z) overflows without the max shift.
  for (double offset : {0.0, 1000.0}) {
    const std::vector<double> logits = padded_logits(1, 3.0, offset);
    const Xent<double> x =
        run_single_shard(logits, kTargets, std::vector<double>(kN, 1.0), kN, kCeVocab, kLd);
    for (int64_t n = 0; n < kN; ++n) {
      const double want =
          kTargets[n] < 0 ? 0.0 : direct_loss(&logits[n * kLd], kCeVocab, kTargets[n]);
      EXPECT_NEAR(x.losses[n], want, 1e-12 * (1.0 + std::fabs(want)))
          << "row " << n << ", offset " << offset;
    }
    const Xent<float> xf = run_single_shard(cast_vector<float>(logits), kTargets,
                                            std::vector<float>(kN, 1.0f), kN, kCeVocab, kLd);
    expect_all_close("float losses (offset " + std::to_string(offset) + ")", xf.losses, x.losses,
                     1e-3, 1e-2);
  }
}

TEST(CrossEntropy, IgnoredTargetsGiveZeroLossAndZeroGradient) {
  const Xent<double> x = run_single_shard(padded_logits(2), kTargets,
                                          random_vector(kN, 3, 1.0, 2.0), kN, kCeVocab, kLd);
  for (int64_t n = 0; n < kN; ++n) {
    if (kTargets[n] >= 0) {
      EXPECT_GT(x.losses[n], 0.0) << "row " << n;
      continue;
    }
    EXPECT_EQ(x.losses[n], 0.0) << "ignored row " << n;
    EXPECT_EQ(x.target_logit[n], 0.0) << "ignored row " << n;
    for (int64_t v = 0; v < kLd; ++v) ASSERT_EQ(x.dlogits[n * kLd + v], 0.0) << "row " << n;
  }
}

// Padding holds NaN (never read, or the statistics would be NaN) and comes back 0 in dlogits,
// which starts NaN-filled, so every element must have been overwritten.
TEST(CrossEntropy, PaddingIsNeverReadAndZeroInBackward) {
  const Xent<float> x = run_single_shard(cast_vector<float>(padded_logits(4)), kTargets,
                                         std::vector<float>(kN, 0.5f), kN, kCeVocab, kLd);
  for (int64_t n = 0; n < kN; ++n) {
    EXPECT_TRUE(std::isfinite(x.row_max[n])) << "row " << n;
    EXPECT_TRUE(std::isfinite(x.sumexp[n])) << "row " << n;
    EXPECT_TRUE(std::isfinite(x.losses[n])) << "row " << n;
    for (int64_t v = 0; v < kCeVocab; ++v) ASSERT_TRUE(std::isfinite(x.dlogits[n * kLd + v]));
    for (int64_t v = kCeVocab; v < kLd; ++v) ASSERT_EQ(x.dlogits[n * kLd + v], 0.0f) << "padding";
  }
}

// Each live row's gradient sums to 0 over the vocabulary (softmax sums to 1, onehot to 1).
TEST(CrossEntropy, GradientRowsSumToZero) {
  const Xent<double> x = run_single_shard(padded_logits(5), kTargets,
                                          random_vector(kN, 6, 1.0, 1.0), kN, kCeVocab, kLd);
  for (int64_t n = 0; n < kN; ++n) {
    double s = 0;
    for (int64_t v = 0; v < kCeVocab; ++v) s += x.dlogits[n * kLd + v];
    EXPECT_NEAR(s, 0.0, 1e-12) << "row " << n;
  }
}

// The whole single-shard composition, L = Σ_n w_n loss_n, so dlosses = w; every real logit
// is perturbed (padding is zero here and has zero gradient on both sides).
TEST(CrossEntropy, BackwardMatchesFiniteDifferences) {
  std::vector<double> logits = padded_logits(7);
  for (int64_t n = 0; n < kN; ++n) {
    for (int64_t v = kCeVocab; v < kLd; ++v) logits[n * kLd + v] = 0.0;
  }
  const std::vector<double> w = random_vector(kN, 8);
  const Xent<double> x = run_single_shard(logits, kTargets, w, kN, kCeVocab, kLd);
  auto loss = [&] {
    return testing::dot(run_single_shard(logits, kTargets, w, kN, kCeVocab, kLd).losses, w);
  };
  // h = 1e-5, floor 1e-4: round-off in the difference quotient stays far below the tolerance
  // for the many near-zero softmax gradients.
  testing::expect_gradient_close("dlogits", loss, logits, x.dlogits, 1e-6, 1e-5, 1e-4);
}

TEST(CrossEntropy, BackwardInPlaceMatchesOutOfPlace) {
  const std::vector<float> logits = cast_vector<float>(padded_logits(9));
  const std::vector<float> dlosses = cast_vector<float>(random_vector(kN, 10));
  const Xent<float> x = run_single_shard(logits, kTargets, dlosses, kN, kCeVocab, kLd);
  std::vector<float> inplace = logits;
  xent_backward(inplace.data(), inplace.data(), kTargets.data(), x.row_max.data(), x.sumexp.data(),
                dlosses.data(), kN, kCeVocab, kLd, 0);
  for (int64_t i = 0; i < kN * kLd; ++i) ASSERT_EQ(inplace[i], x.dlogits[i]) << "element " << i;
}

// tp ranks simulated in-process. The padded vocabulary V_padded splits into tp equal shards of
// V_local columns; only the last shards hold padding (with V_padded = 48 and tp = 8, the last
// shard has no real column at all). Pass 1 per shard, max across shards, pass 2 per shard, sums
// across shards, loss: equal to the single-shard loss; each shard's backward equals its columns
// of the single-shard backward.
template <typename T>
void check_vocab_split(int64_t V_padded, int64_t tp, double tol) {
  SCOPED_TRACE("V_padded " + std::to_string(V_padded) + ", tp " + std::to_string(tp));
  ASSERT_EQ(V_padded % tp, 0);
  const int64_t V_local = V_padded / tp;
  const std::vector<T> full = cast_vector<T>(padded_logits(11));  // (kN, kLd), kCeVocab real
  const std::vector<T> dlosses = cast_vector<T>(random_vector(kN, 12, 1.0, 1.0));
  const Xent<T> want = run_single_shard(full, kTargets, dlosses, kN, kCeVocab, kLd);

  std::vector<std::vector<T>> shard(tp);
  std::vector<int64_t> n_cols(tp);
  for (int64_t r = 0; r < tp; ++r) {
    const int64_t vocab_start = r * V_local;
    n_cols[r] = std::clamp<int64_t>(kCeVocab - vocab_start, 0, V_local);
    shard[r].assign(kN * V_local, std::numeric_limits<T>::quiet_NaN());
    for (int64_t n = 0; n < kN; ++n) {
      for (int64_t v = 0; v < n_cols[r]; ++v) {
        shard[r][n * V_local + v] = full[n * kLd + vocab_start + v];
      }
    }
  }
  // Pass 1 and the MAX all-reduce.
  std::vector<T> row_max(kN, -std::numeric_limits<T>::infinity()), local(kN);
  for (int64_t r = 0; r < tp; ++r) {
    xent_row_max(local.data(), shard[r].data(), kN, n_cols[r], V_local);
    for (int64_t n = 0; n < kN; ++n) row_max[n] = std::max(row_max[n], local[n]);
  }
  // Pass 2 and the SUM all-reduce.
  std::vector<T> sumexp(kN, T(0)), target_logit(kN, T(0)), local_tl(kN);
  for (int64_t r = 0; r < tp; ++r) {
    xent_row_sumexp_target(local.data(), local_tl.data(), shard[r].data(), kTargets.data(),
                           row_max.data(), kN, n_cols[r], V_local, r * V_local);
    for (int64_t n = 0; n < kN; ++n) {
      sumexp[n] += local[n];
      target_logit[n] += local_tl[n];
    }
  }
  std::vector<T> losses(kN);
  xent_loss(losses.data(), row_max.data(), sumexp.data(), target_logit.data(), kTargets.data(), kN);
  expect_all_close("losses", losses, want.losses, tol);
  for (int64_t r = 0; r < tp; ++r) {
    std::vector<T> dshard(kN * V_local, std::numeric_limits<T>::quiet_NaN());
    xent_backward(dshard.data(), shard[r].data(), kTargets.data(), row_max.data(), sumexp.data(),
                  dlosses.data(), kN, n_cols[r], V_local, r * V_local);
    std::vector<T> got, expected;
    for (int64_t n = 0; n < kN; ++n) {
      for (int64_t v = 0; v < V_local; ++v) {
        const int64_t global = r * V_local + v;
        got.push_back(dshard[n * V_local + v]);
        expected.push_back(global < kCeVocab ? want.dlogits[n * kLd + global] : T(0));
      }
    }
    expect_all_close("dlogits of shard " + std::to_string(r), got, expected, tol);
  }
}

TEST(CrossEntropy, VocabSplitMatchesSingleShard) {
  for (int64_t tp : {2, 4}) {
    check_vocab_split<double>(40, tp, 1e-12);
    check_vocab_split<float>(40, tp, 1e-5);
  }
  for (int64_t tp : {2, 4, 8}) check_vocab_split<double>(48, tp, 1e-12);
}

// Large enough (N * V above the kernels' serial cutoff) that every pass runs threaded over rows;
// losses and gradients against the definition in double.
TEST(CrossEntropy, ThreadedPassesMatchDefinition) {
  struct ThreadCount {  // restores the thread count however the test exits
    int saved = omp_get_max_threads();
    ~ThreadCount() { omp_set_num_threads(saved); }
  } restore;
  omp_set_num_threads(3);
  const int64_t N = 96, V = 700, ld = 704;
  const std::vector<double> logits = random_vector(N * ld, 13, 2.0);
  const std::vector<double> dlosses = random_vector(N, 14, 1.0, 1.0);
  std::vector<int32_t> targets(N);
  for (int64_t n = 0; n < N; ++n) targets[n] = n % 9 == 4 ? -1 : static_cast<int32_t>(n * 37 % V);
  const Xent<double> x = run_single_shard(logits, targets, dlosses, N, V, ld);
  std::vector<double> want_losses(N), want_dlogits(N * ld, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    const double* z = &logits[n * ld];
    want_losses[n] = direct_loss(z, V, targets[n]);
    double m = z[0], s = 0;
    for (int64_t v = 1; v < V; ++v) m = std::max(m, z[v]);
    for (int64_t v = 0; v < V; ++v) s += std::exp(z[v] - m);
    for (int64_t v = 0; v < V; ++v) {
      want_dlogits[n * ld + v] =
          (std::exp(z[v] - m) / s - (v == targets[n] ? 1.0 : 0.0)) * dlosses[n];
    }
  }
  expect_all_close("losses", x.losses, want_losses, 1e-12);
  expect_all_close("dlogits", x.dlogits, want_dlogits, 1e-12, 1e-9);
}

}  // namespace
}  // namespace tessera::backends::cpu
