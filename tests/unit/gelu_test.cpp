// gelu_forward/backward: forward against the tanh formula written out, the gradient against
// central differences (double), overwrite and aliasing, float (own vector exp) against double.
#include "backends/cpu/gelu.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "grad_check.h"

namespace tessera::backends::cpu {
namespace {

namespace tt = tessera::testing;

double gelu_reference(double x) {
  const double u = std::sqrt(2.0 / std::numbers::pi) * (x + 0.044715 * x * x * x);
  return 0.5 * x * (1.0 + std::tanh(u));
}

TEST(Gelu, ForwardMatchesTanhFormula) {
  std::vector<double> x = tt::random_vector(200, 31, 3.0);
  x.insert(x.end(), {0.0, -1e-8, 1e-8, -9.0, 9.0, -30.0, 30.0});
  std::vector<double> out(x.size(), 5.0), expect(x.size());
  gelu_forward(out.data(), x.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) expect[i] = gelu_reference(x[i]);
  // For x << 0, 1 + tanh(u) in the reference cancels (down to 0) while x · sigmoid(2u) stays
  // accurate: a 1e-3 floor judges those tiny values by their absolute error.
  tt::expect_all_close("gelu", out, expect, 1e-12, 1e-3);
  EXPECT_DOUBLE_EQ(gelu_reference(1.0), 0.8411919906082768);  // PyTorch, approximate='tanh'
}

TEST(Gelu, BackwardMatchesCentralDifferences) {
  const int64_t n = 300;
  std::vector<double> x = tt::random_vector(n, 32, 2.5), r = tt::random_vector(n, 33);
  std::vector<double> dinp(n, 42.0);  // garbage: backward overwrites
  gelu_backward(dinp.data(), x.data(), r.data(), n);
  auto loss = [&] {
    std::vector<double> out(n);
    gelu_forward(out.data(), x.data(), n);
    return tt::dot(out, r);
  };
  // Floor 1e-3: the loss's round-off (~1e-9 in the difference quotient) must not dominate
  // gradients of x << 0, which are ~0.
  tt::expect_gradient_close("gelu dinp", loss, x, dinp, 1e-5, 1e-6, 1e-3);

  // dinp overwrites: the same result from a zeroed buffer.
  std::vector<double> dinp0(n, 0.0);
  gelu_backward(dinp0.data(), x.data(), r.data(), n);
  tt::expect_all_close("gelu dinp overwrites", dinp, dinp0, 1e-15);
}

TEST(Gelu, InPlaceAliasingWorks) {
  const int64_t n = 64;
  std::vector<double> x = tt::random_vector(n, 34), r = tt::random_vector(n, 35);
  std::vector<double> out(n), dinp(n);
  gelu_forward(out.data(), x.data(), n);
  gelu_backward(dinp.data(), x.data(), r.data(), n);
  std::vector<double> y = x, d = r;
  gelu_forward(y.data(), y.data(), n);
  gelu_backward(d.data(), x.data(), d.data(), n);
  tt::expect_all_close("gelu forward in place", y, out, 1e-15);
  tt::expect_all_close("gelu backward in place", d, dinp, 1e-15);
}

// Above the parallel threshold, over a wide range: float's polynomial exp against std::exp.
TEST(Gelu, FloatAgreesWithDouble) {
  const int64_t n = 40000;
  std::vector<double> x = tt::random_vector(n, 36, 4.0), dout = tt::random_vector(n, 37);
  for (int64_t i = 0; i < 200; ++i) x[i] = -50.0 + 0.5 * static_cast<double>(i);  // [-50, 50)
  for (auto& v : x) v = static_cast<double>(static_cast<float>(v));  // same inputs in both
  std::vector<double> out(n), dinp(n);
  gelu_forward(out.data(), x.data(), n);
  gelu_backward(dinp.data(), x.data(), dout.data(), n);
  auto x_f = tt::cast_vector<float>(x), dout_f = tt::cast_vector<float>(dout);
  std::vector<float> out_f(n), dinp_f(n);
  gelu_forward(out_f.data(), x_f.data(), n);
  gelu_backward(dinp_f.data(), x_f.data(), dout_f.data(), n);
  // Judged against the rms: gelu' crosses zero near x = -0.75 (its two terms cancel), and for
  // x < -10 float's exp saturates at 1e-38-sized values where double goes on to 1e-60.
  tt::expect_all_close("gelu out float vs double", out_f, out, 1e-5, tt::rms(out));
  tt::expect_all_close("gelu dinp float vs double", dinp_f, dinp, 1e-5, tt::rms(dinp));
  // Where values are not tiny, much tighter than the rms scale: relative 1e-5 with a 1e-3 floor.
  tt::expect_all_close("gelu out float vs double (1e-3 floor)", out_f, out, 1e-5, 1e-3);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(std::isfinite(out_f[i]) && std::isfinite(dinp_f[i])) << "x = " << x[i];
  }
}

}  // namespace
}  // namespace tessera::backends::cpu
