// layernorm_forward/backward: forward statistics (zero mean, unit variance, saved mean/rstd),
// every gradient against central differences (double), dinp/dweight/dbias accumulate, float
// against double, and a bit-identical repeat with many threads' partial sums.
#include "backends/cpu/layernorm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "grad_check.h"

namespace tessera::backends::cpu {
namespace {

namespace tt = tessera::testing;

struct LayernormCase {
  int64_t N, C;
  std::vector<double> inp, weight, bias, r;
  LayernormCase(int64_t n, int64_t c)
      : N(n),
        C(c),
        inp(tt::random_vector(n * c, 21, 2.0, 0.5)),
        weight(tt::random_vector(c, 22, 0.3, 1.0)),
        bias(tt::random_vector(c, 23, 0.2)),
        r(tt::random_vector(n * c, 24)) {}

  double loss() const {
    std::vector<double> out(N * C), mean(N), rstd(N);
    layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(),
                      N, C);
    return tt::dot(out, r);
  }
  // Runs forward then backward with dout = r onto the given (pre-filled) gradients.
  void backward(std::vector<double>& dinp, std::vector<double>& dweight,
                std::vector<double>& dbias) const {
    std::vector<double> out(N * C), mean(N), rstd(N);
    layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(),
                      N, C);
    layernorm_backward(dinp.data(), dweight.data(), dbias.data(), r.data(), inp.data(),
                       weight.data(), mean.data(), rstd.data(), N, C);
  }
};

TEST(Layernorm, ForwardNormalisesEachRow) {
  LayernormCase k(6, 10);
  std::vector<double> ones(k.C, 1.0), zeros(k.C, 0.0);
  std::vector<double> out(k.N * k.C, 7.0), mean(k.N), rstd(k.N);
  layernorm_forward(out.data(), mean.data(), rstd.data(), k.inp.data(), ones.data(), zeros.data(),
                    k.N, k.C);
  for (int64_t n = 0; n < k.N; ++n) {
    double m = 0, var = 0, om = 0, ovar = 0;
    for (int64_t c = 0; c < k.C; ++c) m += k.inp[n * k.C + c] / k.C;
    for (int64_t c = 0; c < k.C; ++c) var += std::pow(k.inp[n * k.C + c] - m, 2) / k.C;
    for (int64_t c = 0; c < k.C; ++c) om += out[n * k.C + c] / k.C;
    for (int64_t c = 0; c < k.C; ++c) ovar += std::pow(out[n * k.C + c] - om, 2) / k.C;
    EXPECT_NEAR(mean[n], m, 1e-12) << "row " << n;
    EXPECT_NEAR(rstd[n], 1.0 / std::sqrt(var + 1e-5), 1e-12) << "row " << n;
    EXPECT_NEAR(om, 0.0, 1e-12) << "row " << n;
    EXPECT_NEAR(ovar, var / (var + 1e-5), 1e-12) << "row " << n;  // biased variance + eps
  }
  // weight and bias: out = xhat * w + b elementwise.
  std::vector<double> out2(k.N * k.C);
  layernorm_forward(out2.data(), mean.data(), rstd.data(), k.inp.data(), k.weight.data(),
                    k.bias.data(), k.N, k.C);
  for (int64_t i = 0; i < k.N * k.C; ++i) {
    EXPECT_NEAR(out2[i], out[i] * k.weight[i % k.C] + k.bias[i % k.C], 1e-12) << "element " << i;
  }
}

TEST(Layernorm, BackwardMatchesCentralDifferences) {
  LayernormCase k(5, 12);
  std::vector<double> dinp(k.N * k.C, 0.0), dweight(k.C, 0.0), dbias(k.C, 0.0);
  k.backward(dinp, dweight, dbias);
  auto loss = [&] { return k.loss(); };
  tt::expect_gradient_close("dinp", loss, k.inp, dinp, 1e-6);
  tt::expect_gradient_close("dweight", loss, k.weight, dweight, 1e-6);
  tt::expect_gradient_close("dbias", loss, k.bias, dbias, 1e-6);
}

// dinp joins the residual stream, so it accumulates like the parameter grads.
TEST(Layernorm, AllGradientsAccumulate) {
  LayernormCase k(4, 9);
  std::vector<double> dinp(k.N * k.C, 0.0), dweight(k.C, 0.0), dbias(k.C, 0.0);
  k.backward(dinp, dweight, dbias);
  std::vector<double> dinp2(k.N * k.C, 1.5), dweight2(k.C, -2.0), dbias2(k.C, 0.75);
  k.backward(dinp2, dweight2, dbias2);
  for (auto& x : dinp) x += 1.5;
  for (auto& x : dweight) x -= 2.0;
  for (auto& x : dbias) x += 0.75;
  tt::expect_all_close("dinp accumulates", dinp2, dinp, 1e-12);
  tt::expect_all_close("dweight accumulates", dweight2, dweight, 1e-12);
  tt::expect_all_close("dbias accumulates", dbias2, dbias, 1e-12);
}

// Above the parallel threshold: the per-thread partial sums and their reduction run.
TEST(Layernorm, FloatAgreesWithDouble) {
  LayernormCase k(200, 96);
  std::vector<double> out(k.N * k.C), mean(k.N), rstd(k.N);
  layernorm_forward(out.data(), mean.data(), rstd.data(), k.inp.data(), k.weight.data(),
                    k.bias.data(), k.N, k.C);
  std::vector<double> dinp(k.N * k.C, 0.0), dweight(k.C, 0.0), dbias(k.C, 0.0);
  layernorm_backward(dinp.data(), dweight.data(), dbias.data(), k.r.data(), k.inp.data(),
                     k.weight.data(), mean.data(), rstd.data(), k.N, k.C);

  auto inp = tt::cast_vector<float>(k.inp), weight = tt::cast_vector<float>(k.weight);
  auto bias = tt::cast_vector<float>(k.bias), dout = tt::cast_vector<float>(k.r);
  std::vector<float> out_f(k.N * k.C), mean_f(k.N), rstd_f(k.N);
  layernorm_forward(out_f.data(), mean_f.data(), rstd_f.data(), inp.data(), weight.data(),
                    bias.data(), k.N, k.C);
  std::vector<float> dinp_f(k.N * k.C, 0.0f), dweight_f(k.C, 0.0f), dbias_f(k.C, 0.0f);
  layernorm_backward(dinp_f.data(), dweight_f.data(), dbias_f.data(), dout.data(), inp.data(),
                     weight.data(), mean_f.data(), rstd_f.data(), k.N, k.C);
  tt::expect_all_close("out float vs double", out_f, out, 1e-5, tt::rms(out));
  tt::expect_all_close("mean float vs double", mean_f, mean, 1e-5, tt::rms(mean));
  tt::expect_all_close("rstd float vs double", rstd_f, rstd, 1e-5);
  tt::expect_all_close("dinp float vs double", dinp_f, dinp, 1e-5, tt::rms(dinp));
  tt::expect_all_close("dweight float vs double", dweight_f, dweight, 1e-5, tt::rms(dweight));
  tt::expect_all_close("dbias float vs double", dbias_f, dbias, 1e-5, tt::rms(dbias));
}

// Same inputs, same thread count: bit-identical parameter gradients (fixed reduction order).
TEST(Layernorm, BackwardIsDeterministic) {
  LayernormCase k(300, 64);
  auto inp = tt::cast_vector<float>(k.inp), weight = tt::cast_vector<float>(k.weight);
  auto bias = tt::cast_vector<float>(k.bias), dout = tt::cast_vector<float>(k.r);
  std::vector<float> out(k.N * k.C), mean(k.N), rstd(k.N);
  layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(),
                    k.N, k.C);
  std::vector<float> first_dw, first_db, first_dx;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<float> dinp(k.N * k.C, 0.0f), dweight(k.C, 0.0f), dbias(k.C, 0.0f);
    layernorm_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(),
                       weight.data(), mean.data(), rstd.data(), k.N, k.C);
    if (rep == 0) {
      first_dw = dweight;
      first_db = dbias;
      first_dx = dinp;
    } else {
      EXPECT_EQ(dweight, first_dw) << "repeat " << rep;
      EXPECT_EQ(dbias, first_db) << "repeat " << rep;
      EXPECT_EQ(dinp, first_dx) << "repeat " << rep;
    }
  }
}

}  // namespace
}  // namespace tessera::backends::cpu
