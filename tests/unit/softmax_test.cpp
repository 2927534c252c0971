// Row softmax with temperature (sampling): the definition, stability, in-place use, bad input.
#include "generate/softmax.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "grad_check.h"

namespace tessera::generate {
using core::fast_exp;
namespace {

using testing::cast_vector;
using testing::expect_all_close;
using testing::random_vector;

// exp(z_i / temperature) / Σ_j exp(z_j / temperature), unshifted (fine for small logits).
std::vector<double> direct_softmax(const std::vector<double>& z, double temperature) {
  std::vector<double> p(z.size());
  double s = 0;
  for (size_t i = 0; i < z.size(); ++i) s += p[i] = std::exp(z[i] / temperature);
  for (double& x : p) x /= s;
  return p;
}

TEST(Softmax, MatchesDefinition) {
  const std::vector<double> z = random_vector(50, 1, 2.0);
  for (double temperature : {1.0, 0.7, 2.5}) {
    std::vector<double> p(z.size());
    softmax_forward(p.data(), z.data(), static_cast<int64_t>(z.size()), temperature);
    expect_all_close("double, temperature " + std::to_string(temperature), p,
                     direct_softmax(z, temperature), 1e-13);
    std::vector<float> pf(z.size());
    const std::vector<float> zf = cast_vector<float>(z);
    softmax_forward(pf.data(), zf.data(), static_cast<int64_t>(z.size()),
                    static_cast<float>(temperature));
    expect_all_close("float, temperature " + std::to_string(temperature), pf,
                     direct_softmax(z, temperature), 1e-5);
  }
}

TEST(Softmax, LargeLogitsStayFiniteAndSumToOne) {
  // exp(1e4) overflows float and double alike without the max shift.
  std::vector<float> z = cast_vector<float>(random_vector(1000, 2, 5.0, 1e4));
  std::vector<float> p(z.size());
  softmax_forward(p.data(), z.data(), static_cast<int64_t>(z.size()), 0.5f);
  double s = 0;
  for (float x : p) {
    ASSERT_TRUE(std::isfinite(x));
    s += x;
  }
  EXPECT_NEAR(s, 1.0, 1e-5);
  // Shift invariance: the same distribution as the logits minus 1e4.
  std::vector<double> shifted(z.size());
  for (size_t i = 0; i < z.size(); ++i) shifted[i] = static_cast<double>(z[i]) - 1e4;
  expect_all_close("shifted", p, direct_softmax(shifted, 0.5), 1e-4);
}

TEST(Softmax, InPlace) {
  const std::vector<double> z = random_vector(33, 3);
  std::vector<double> out(z.size()), inplace = z;
  softmax_forward(out.data(), z.data(), 33, 0.9);
  softmax_forward(inplace.data(), inplace.data(), 33, 0.9);
  for (size_t i = 0; i < z.size(); ++i) EXPECT_EQ(inplace[i], out[i]) << "element " << i;
}

TEST(Softmax, RejectsNonPositiveTemperature) {
  std::vector<float> z = {1.0f, 2.0f}, p(2);
  EXPECT_THROW(softmax_forward(p.data(), z.data(), 2, 0.0f), tessera::Error);
  EXPECT_THROW(softmax_forward(p.data(), z.data(), 2, -1.0f), tessera::Error);
  EXPECT_THROW(softmax_forward(p.data(), z.data(), 0, 1.0f), tessera::Error);
}

TEST(Softmax, MaskedLogitsGetZeroProbability) {
  const float kNegInf = -std::numeric_limits<float>::infinity();
  std::vector<float> z = {0.5f, kNegInf, 1.5f, kNegInf}, p(4);
  softmax_forward(p.data(), z.data(), 4, 1.0f);
  EXPECT_EQ(p[1], 0.0f);
  EXPECT_EQ(p[3], 0.0f);
  EXPECT_NEAR(p[0], 1.0 / (1.0 + std::exp(1.0)), 1e-7);
  EXPECT_NEAR(p[2], 1.0 / (1.0 + std::exp(-1.0)), 1e-7);
}

// fast_exp (float) over its whole finite range against exp in double, and at the edges.
TEST(Softmax, FastExpIsAccurateAndHandlesSpecialValues) {
  double worst = 0;
  float worst_x = 0;
  for (int64_t i = 0; i <= 2000000; ++i) {
    const float x = -87.3f + static_cast<float>(i) * (88.0f + 87.3f) / 2000000.0f;
    const double want = std::exp(static_cast<double>(x));
    const double err = std::fabs(fast_exp(x) - want) / want;
    if (err > worst) {
      worst = err;
      worst_x = x;
    }
  }
  EXPECT_LT(worst, 1.2e-7) << "worst at x = " << worst_x;
  const float kInf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(fast_exp(0.0f), 1.0f);
  EXPECT_EQ(fast_exp(-kInf), 0.0f);
  EXPECT_EQ(fast_exp(-200.0f), 0.0f);
  EXPECT_EQ(fast_exp(-1e30f), 0.0f);
  EXPECT_EQ(fast_exp(kInf), kInf);
  EXPECT_EQ(fast_exp(1e30f), kInf);
  EXPECT_TRUE(std::isnan(fast_exp(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(std::isnan(fast_exp(-std::numeric_limits<float>::quiet_NaN())));
  // In a loop the compiler vectorizes: same values as the scalar calls.
  std::vector<float> xs = {-kInf, -150.0f, -87.0f, -3.25f, 0.0f, 2.5f, 88.0f, kInf};
  std::vector<float> ys(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) ys[i] = fast_exp(xs[i]);
  for (size_t i = 0; i < xs.size(); ++i) EXPECT_EQ(ys[i], fast_exp(xs[i])) << "x = " << xs[i];
}

}  // namespace
}  // namespace tessera::generate
