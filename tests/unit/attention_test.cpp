// Causal self-attention kernels: forward and its saved softmax statistics against a naive triple
// loop, causality, backward (which recomputes the probabilities from the statistics) against
// central differences (double), float against double, and the workspace contract.
#include "backends/cpu/attention.h"

#include <gtest/gtest.h>
#include <omp.h>

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

struct Sizes {
  int64_t B, T, C, NH;
  int64_t qkv() const { return B * T * 3 * C; }
  int64_t out() const { return B * T * C; }
  int64_t att() const { return B * NH * T * T; }
  int64_t stats() const { return B * NH * T * 2; }
};

// Straight from the definition: for each (b, h, t), scores over keys j <= t, softmax, weighted
// sum of values. No blocking, no BLAS. stats: each row's [max score, 1 / sum of exponentials].
void naive_attention(std::vector<double>& out, std::vector<double>& att, std::vector<double>& stats,
                     const std::vector<double>& qkv, const Sizes& s) {
  const int64_t HS = s.C / s.NH;
  const int64_t C3 = 3 * s.C;
  const double scale = 1.0 / std::sqrt(static_cast<double>(HS));
  out.assign(s.out(), 0.0);
  att.assign(s.att(), 0.0);
  stats.assign(s.stats(), 0.0);
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t h = 0; h < s.NH; ++h) {
      for (int64_t t = 0; t < s.T; ++t) {
        const double* q = &qkv[(b * s.T + t) * C3 + h * HS];
        std::vector<double> score(t + 1);
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j <= t; ++j) {
          const double* k = &qkv[(b * s.T + j) * C3 + s.C + h * HS];
          double dot = 0;
          for (int64_t d = 0; d < HS; ++d) dot += q[d] * k[d];
          score[j] = dot * scale;
          m = std::max(m, score[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j <= t; ++j) sum += std::exp(score[j] - m);
        stats[((b * s.NH + h) * s.T + t) * 2] = m;
        stats[((b * s.NH + h) * s.T + t) * 2 + 1] = 1.0 / sum;
        double* p = &att[((b * s.NH + h) * s.T + t) * s.T];
        for (int64_t j = 0; j <= t; ++j) p[j] = std::exp(score[j] - m) / sum;
        double* o = &out[(b * s.T + t) * s.C + h * HS];
        for (int64_t j = 0; j <= t; ++j) {
          const double* v = &qkv[(b * s.T + j) * C3 + 2 * s.C + h * HS];
          for (int64_t d = 0; d < HS; ++d) o[d] += p[j] * v[d];
        }
      }
    }
  }
}

template <typename Real>
struct AttentionRun {
  std::vector<Real> out, stats, workspace, dqkv;
};

template <typename Real>
AttentionRun<Real> run_forward(const std::vector<Real>& qkv, const Sizes& s) {
  AttentionRun<Real> r;
  r.out.assign(s.out(), Real(0));
  r.stats.assign(s.stats(), Real(0));
  r.workspace.assign(attention_workspace_size(s.B, s.T, s.C, s.NH), Real(0));
  attention_forward(r.out.data(), r.stats.data(), r.workspace.data(), qkv.data(), s.B, s.T, s.C,
                    s.NH);
  return r;
}

template <typename Real>
void run_backward(AttentionRun<Real>& r, const std::vector<Real>& dout,
                  const std::vector<Real>& qkv, const Sizes& s) {
  r.dqkv.assign(s.qkv(), Real(0));
  attention_backward(r.dqkv.data(), r.workspace.data(), dout.data(), qkv.data(), r.stats.data(),
                     s.B, s.T, s.C, s.NH);
}

// Sizes that exercise one row block (T small) and several, the last one partial (T = 300).
const Sizes kSmall{2, 5, 12, 3};
const Sizes kLong{1, 300, 8, 2};

TEST(Attention, ForwardMatchesNaiveReference) {
  for (const Sizes& s : {kSmall, kLong, Sizes{3, 64, 32, 4}}) {
    const std::vector<double> qkv = random_vector(s.qkv(), 11);
    std::vector<double> want_out, want_att, want_stats;
    naive_attention(want_out, want_att, want_stats, qkv, s);
    const AttentionRun<double> got = run_forward(qkv, s);
    // Floor 1e-3: entries far below 1 are judged by absolute error (summation order differs).
    expect_all_close("out (T=" + std::to_string(s.T) + ")", got.out, want_out, 1e-10, 1e-3);
    expect_all_close("stats (T=" + std::to_string(s.T) + ")", got.stats, want_stats, 1e-10, 1e-3);
  }
}

// Backward's view of the probabilities: P_tj = exp(s_tj - max_t) * (1 / sum_t) from the saved
// statistics must be a distribution over j <= t for every row, with large scores too (the max
// subtraction keeps exp finite), and the row's max must be one of its scores.
TEST(Attention, StatisticsGiveRowsThatSumToOne) {
  const Sizes s = kLong;
  const std::vector<float> qkv = cast_vector<float>(random_vector(s.qkv(), 12, 30.0));
  const AttentionRun<float> r = run_forward(qkv, s);
  const int64_t HS = s.C / s.NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(HS));
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t h = 0; h < s.NH; ++h) {
      for (int64_t t = 0; t < s.T; ++t) {
        const float* st = &r.stats[((b * s.NH + h) * s.T + t) * 2];
        ASSERT_TRUE(std::isfinite(st[0]) && std::isfinite(st[1]) && st[1] > 0.0f && st[1] <= 1.0f)
            << "b " << b << " h " << h << " t " << t << ": " << st[0] << ", " << st[1];
        double sum = 0, top = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < HS; ++d) {
            dot += double(qkv[(b * s.T + t) * 3 * s.C + h * HS + d]) *
                   qkv[(b * s.T + j) * 3 * s.C + s.C + h * HS + d];
          }
          top = std::max(top, dot * scale);
          sum += std::exp(dot * scale - st[0]) * st[1];
        }
        // The kernel's float scores carry about 1e-7 of |score| of absolute error (scores here
        // reach ~1000), which exp turns into relative error of the terms.
        EXPECT_NEAR(sum, 1.0, 1e-5 + 1e-6 * std::fabs(top))
            << "b " << b << " h " << h << " t " << t;
        EXPECT_NEAR(st[0], top, 1e-5 * std::max(1.0, std::fabs(top))) << "t " << t;
      }
    }
  }
}

// Changing token t0's q, k and v must leave every earlier position's output bit for bit alone,
// and must change position t0's. t0 = 100 shares a row block with earlier rows; 150 does not.
TEST(Attention, IsCausal) {
  const Sizes s{2, 200, 16, 2};
  const std::vector<double> qkv = random_vector(s.qkv(), 13);
  const AttentionRun<double> base = run_forward(qkv, s);
  for (int64_t t0 : {0, 100, 150, 199}) {
    std::vector<double> changed = qkv;
    for (int64_t b = 0; b < s.B; ++b) {
      for (int64_t c = 0; c < 3 * s.C; ++c) changed[(b * s.T + t0) * 3 * s.C + c] += 1.5;
    }
    const AttentionRun<double> r = run_forward(changed, s);
    for (int64_t b = 0; b < s.B; ++b) {
      for (int64_t t = 0; t < t0; ++t) {
        for (int64_t c = 0; c < s.C; ++c) {
          const int64_t i = (b * s.T + t) * s.C + c;
          ASSERT_EQ(r.out[i], base.out[i]) << "t0 " << t0 << " leaked into b " << b << " t " << t;
        }
      }
      double moved = 0;
      for (int64_t c = 0; c < s.C; ++c) {
        const int64_t i = (b * s.T + t0) * s.C + c;
        moved += std::fabs(r.out[i] - base.out[i]);
      }
      EXPECT_GT(moved, 1e-6) << "changing token " << t0 << " did not change its own output";
    }
  }
}

// loss = sum(out .* R), so dout = R; every element of qkv is perturbed.
TEST(Attention, BackwardMatchesFiniteDifferences) {
  for (const Sizes& s : {kSmall, Sizes{2, 7, 8, 2}}) {
    std::vector<double> qkv = random_vector(s.qkv(), 21);
    const std::vector<double> R = random_vector(s.out(), 22);
    AttentionRun<double> r = run_forward(qkv, s);
    run_backward(r, R, qkv, s);
    auto loss = [&] { return testing::dot(run_forward(qkv, s).out, R); };
    testing::expect_gradient_close("dqkv (T=" + std::to_string(s.T) + ")", loss, qkv, r.dqkv, 1e-6);
  }
}

// Across several row blocks (T = 300, last block partial) on a strided sample of elements that
// covers q, k and v of early and late tokens: each perturbation costs two forwards.
TEST(Attention, BackwardMatchesFiniteDifferencesAcrossRowBlocks) {
  const Sizes s = kLong;
  std::vector<double> qkv = random_vector(s.qkv(), 23);
  const std::vector<double> R = random_vector(s.out(), 24);
  AttentionRun<double> r = run_forward(qkv, s);
  run_backward(r, R, qkv, s);
  // The loss sums 2400 O(1) terms, so the difference quotient carries ~1e-9 of round-off at
  // h = 1e-5 (it converges to the analytic value as h grows, then truncation takes over):
  // h = 1e-4, and gradients below the 1e-3 floor are judged by absolute error.
  const double h = 1e-4;
  int checked = 0;
  for (int64_t i = 0; i < s.qkv(); i += 53) {  // 53 = 2 * 24 + 5: every column recurs
    const double saved = qkv[i];
    qkv[i] = saved + h;
    const double plus = testing::dot(run_forward(qkv, s).out, R);
    qkv[i] = saved - h;
    const double minus = testing::dot(run_forward(qkv, s).out, R);
    qkv[i] = saved;
    const double numeric = (plus - minus) / (2 * h);
    ASSERT_LT(testing::relative_error(r.dqkv[i], numeric, 1e-3), 1e-6)
        << "dqkv[" << i << "]: analytic " << r.dqkv[i] << ", numeric " << numeric;
    ++checked;
  }
  EXPECT_GT(checked, 130);
}

TEST(Attention, FloatAgreesWithDouble) {
  const Sizes s{2, 150, 64, 4};
  const std::vector<double> qkv = random_vector(s.qkv(), 31);
  const std::vector<double> dout = random_vector(s.out(), 32);
  AttentionRun<double> rd = run_forward(qkv, s);
  run_backward(rd, dout, qkv, s);
  const std::vector<float> qkv_f = cast_vector<float>(qkv);
  AttentionRun<float> rf = run_forward(qkv_f, s);
  run_backward(rf, cast_vector<float>(dout), qkv_f, s);
  // Relative error with a floor of 1e-2: entries much smaller than 1 are judged absolutely.
  expect_all_close("out float vs double", rf.out, rd.out, 1e-4, 1e-2);
  expect_all_close("stats float vs double", rf.stats, rd.stats, 1e-4, 1e-2);
  expect_all_close("dqkv float vs double", rf.dqkv, rd.dqkv, 1e-4, 1e-2);
}

// Every output element is written (NaN-filled outputs come back finite), and nothing is written
// past attention_workspace_size elements, with more threads than cores so that several
// per-thread slices are in use.
TEST(Attention, OverwritesOutputsAndStaysInsideWorkspace) {
  struct ThreadCount {  // restores the thread count however the test exits
    int saved = omp_get_max_threads();
    ~ThreadCount() { omp_set_num_threads(saved); }
  } restore;
  omp_set_num_threads(4);
  const float kNaN = std::numeric_limits<float>::quiet_NaN();
  const float kGuard = 12345.0f;
  const int64_t kGuardLen = 4096;
  for (const Sizes& s : {kLong, Sizes{2, 129, 32, 4}, Sizes{3, 17, 24, 3}}) {
    const std::vector<float> qkv = cast_vector<float>(random_vector(s.qkv(), 41));
    const std::vector<float> dout = cast_vector<float>(random_vector(s.out(), 42));
    const int64_t ws = attention_workspace_size(s.B, s.T, s.C, s.NH);
    std::vector<float> workspace(ws + kGuardLen, kGuard);
    std::vector<float> out(s.out(), kNaN), stats(s.stats(), kNaN), dqkv(s.qkv(), kNaN);
    attention_forward(out.data(), stats.data(), workspace.data(), qkv.data(), s.B, s.T, s.C, s.NH);
    attention_backward(dqkv.data(), workspace.data(), dout.data(), qkv.data(), stats.data(), s.B,
                       s.T, s.C, s.NH);
    for (int64_t i = 0; i < kGuardLen; ++i) {
      ASSERT_EQ(workspace[ws + i], kGuard) << "wrote " << i << " elements past the workspace";
    }
    for (float x : out) ASSERT_TRUE(std::isfinite(x)) << "out not fully written, T=" << s.T;
    for (float x : stats) ASSERT_TRUE(std::isfinite(x)) << "stats not fully written, T=" << s.T;
    for (float x : dqkv) ASSERT_TRUE(std::isfinite(x)) << "dqkv not fully written, T=" << s.T;
  }
}

// Each (batch, head) block is one thread's work, so results must not depend on how many threads
// share the blocks (a race on the per-thread workspace slices would show up here).
TEST(Attention, ThreadCountDoesNotChangeResults) {
  struct ThreadCount {
    int saved = omp_get_max_threads();
    ~ThreadCount() { omp_set_num_threads(saved); }
  } restore;
  const Sizes s{3, 140, 24, 3};
  const std::vector<double> qkv = random_vector(s.qkv(), 51);
  const std::vector<double> dout = random_vector(s.out(), 52);
  omp_set_num_threads(1);
  AttentionRun<double> one = run_forward(qkv, s);
  run_backward(one, dout, qkv, s);
  omp_set_num_threads(3);
  AttentionRun<double> three = run_forward(qkv, s);
  run_backward(three, dout, qkv, s);
  expect_all_close("out, 1 vs 3 threads", three.out, one.out, 1e-12);
  expect_all_close("dqkv, 1 vs 3 threads", three.dqkv, one.dqkv, 1e-12);
}

}  // namespace
}  // namespace tessera::backends::cpu
