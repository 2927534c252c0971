// residual_forward, add_inplace, scale_inplace, sum_squares: values, aliasing, the threaded path,
// and sum_squares' determinism; float against double.
#include "backends/cpu/residual.h"

#include <gtest/gtest.h>

#include <vector>

#include "grad_check.h"

namespace tessera::backends::cpu {
namespace {

namespace tt = tessera::testing;

// Sizes on both sides of the parallel threshold.
constexpr int64_t kSizes[] = {1, 37, 100003};

TEST(Residual, ForwardAddsAndMayAlias) {
  for (int64_t n : kSizes) {
    auto a = tt::random_vector(n, 41), b = tt::random_vector(n, 42);
    std::vector<double> out(n, 9.0);
    residual_forward(out.data(), a.data(), b.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], a[i] + b[i]) << "n " << n << " i " << i;
    residual_forward(a.data(), a.data(), b.data(), n);  // out aliases a
    EXPECT_EQ(a, out) << "n " << n;
  }
}

// The residual's backward is identity into both branches; the gradient of L = sum(out .* r)
// wrt a (and b) is r. Checked by central differences for completeness.
TEST(Residual, GradientIsIdentity) {
  const int64_t n = 20;
  auto a = tt::random_vector(n, 43), b = tt::random_vector(n, 44), r = tt::random_vector(n, 45);
  auto loss = [&] {
    std::vector<double> out(n);
    residual_forward(out.data(), a.data(), b.data(), n);
    return tt::dot(out, r);
  };
  tt::expect_gradient_close("residual da", loss, a, r, 1e-7);
  tt::expect_gradient_close("residual db", loss, b, r, 1e-7);
}

TEST(Residual, AddInplaceAccumulates) {
  for (int64_t n : kSizes) {
    auto acc = tt::random_vector(n, 46), x = tt::random_vector(n, 47);
    auto expect = acc;
    for (int64_t i = 0; i < n; ++i) expect[i] += x[i];
    add_inplace(acc.data(), x.data(), n);
    EXPECT_EQ(acc, expect) << "n " << n;
  }
}

TEST(Residual, ScaleInplaceMultiplies) {
  for (int64_t n : kSizes) {
    auto x = tt::random_vector(n, 48);
    auto expect = x;
    for (auto& v : expect) v *= 0.37;
    scale_inplace(x.data(), 0.37, n);
    EXPECT_EQ(x, expect) << "n " << n;
    auto xf = tt::cast_vector<float>(x);
    scale_inplace(xf.data(), 2.0f, n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(xf[i], static_cast<float>(x[i]) * 2.0f);
  }
}

TEST(Residual, SumSquaresMatchesReferenceAndIsDeterministic) {
  for (int64_t n : kSizes) {
    auto x = tt::random_vector(n, 49, 3.0);
    long double ref = 0;
    for (double v : x) ref += static_cast<long double>(v) * v;
    const double got = sum_squares(x.data(), n);
    EXPECT_NEAR(got, static_cast<double>(ref), 1e-12 * static_cast<double>(ref)) << "n " << n;
    EXPECT_EQ(sum_squares(x.data(), n), got) << "repeat differs, n " << n;

    // The float instantiation accumulates in double: agrees with double on the same values.
    auto xf = tt::cast_vector<float>(x);
    long double ref_f = 0;
    for (float v : xf) ref_f += static_cast<long double>(v) * v;
    EXPECT_NEAR(sum_squares(xf.data(), n), static_cast<double>(ref_f),
                1e-12 * static_cast<double>(ref_f))
        << "n " << n;
    EXPECT_NEAR(sum_squares(xf.data(), n), got, 1e-5 * got) << "float vs double, n " << n;
  }
  EXPECT_EQ(sum_squares(static_cast<const float*>(nullptr), 0), 0.0);
}

TEST(Residual, AddBiasBroadcastsOverRows) {
  for (int64_t N : {3, 1000}) {  // 1000 x 40 takes the threaded path
    const int64_t C = 40;
    std::vector<float> out(N * C), bias(C);
    for (int64_t i = 0; i < N * C; ++i) out[i] = static_cast<float>(i % 7);
    for (int64_t c = 0; c < C; ++c) bias[c] = 0.5f * static_cast<float>(c);
    add_bias(out.data(), bias.data(), N, C);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t c = 0; c < C; ++c) {
        ASSERT_EQ(out[n * C + c], static_cast<float>((n * C + c) % 7) + 0.5f * c) << n << "," << c;
      }
    }
  }
}

}  // namespace
}  // namespace tessera::backends::cpu
