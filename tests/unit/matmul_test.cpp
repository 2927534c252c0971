// matmul_forward/backward: forward against a naive triple loop in double (one row: the GEMV path;
// several: GEMM), float's few-rows kernel against double and bit for bit across batch sizes (one
// row alone too), every gradient against central differences (double), accumulate/overwrite
// semantics, null bias/dinp, float against double.
#include "backends/cpu/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <utility>
#include <vector>

#include "grad_check.h"

namespace tessera::backends::cpu {
namespace {

namespace tt = tessera::testing;

struct MatmulCase {
  int64_t N = 5, C = 7, OC = 6;
  std::vector<double> inp = tt::random_vector(N * C, 1);
  std::vector<double> weight = tt::random_vector(OC * C, 2, 0.5);
  std::vector<double> bias = tt::random_vector(OC, 3);
  std::vector<double> r = tt::random_vector(N * OC, 4);  // L = sum(out .* r)

  double loss(bool with_bias = true) const {
    std::vector<double> out(N * OC);
    matmul_forward(out.data(), inp.data(), weight.data(), with_bias ? bias.data() : nullptr, N, C,
                   OC);
    return tt::dot(out, r);
  }
};

// One row (a single sequence's decode step) takes the GEMV path; more rows take GEMM.
class MatmulForward : public ::testing::TestWithParam<int64_t> {};

TEST_P(MatmulForward, MatchesNaiveLoop) {
  MatmulCase k;
  k.N = GetParam();
  k.inp = tt::random_vector(k.N * k.C, 1);
  std::vector<double> out(k.N * k.OC, 123.0);  // garbage: forward overwrites
  matmul_forward(out.data(), k.inp.data(), k.weight.data(), k.bias.data(), k.N, k.C, k.OC);
  std::vector<double> expect(k.N * k.OC);
  for (int64_t n = 0; n < k.N; ++n) {
    for (int64_t o = 0; o < k.OC; ++o) {
      double s = k.bias[o];
      for (int64_t c = 0; c < k.C; ++c) s += k.inp[n * k.C + c] * k.weight[o * k.C + c];
      expect[n * k.OC + o] = s;
    }
  }
  tt::expect_all_close("matmul out", out, expect, 1e-12);

  std::vector<double> no_bias(k.N * k.OC, -5.0);
  matmul_forward(no_bias.data(), k.inp.data(), k.weight.data(), static_cast<double*>(nullptr), k.N,
                 k.C, k.OC);
  for (int64_t i = 0; i < k.N * k.OC; ++i) expect[i] -= k.bias[i % k.OC];
  tt::expect_all_close("matmul out without bias", no_bias, expect, 1e-12);
}
INSTANTIATE_TEST_SUITE_P(Rows, MatmulForward, ::testing::Values(1, 5));

// Float with 1 to 32 rows takes the few-rows kernel (each weight read once): against a double loop
// for shapes whose C is not a multiple of its 16 lanes and whose OC is not one of its 4 rows, and
// a row bit for bit the same in batches of different sizes (33 rows: GEMM).
TEST(Matmul, FewRowsInFloatMatchDoubleAndAreBatchInvariant) {
  for (const int64_t N : {1, 2, 3, 5, 17, 32, 33}) {
    for (const auto& [C, OC] : {std::pair<int64_t, int64_t>{768, 512}, {37, 10}, {16, 3}}) {
      const std::vector<double> inp_d = tt::random_vector(N * C, 7),
                                w_d = tt::random_vector(OC * C, 8), b_d = tt::random_vector(OC, 9);
      const std::vector<float> inp(inp_d.begin(), inp_d.end()), weight(w_d.begin(), w_d.end()),
          bias(b_d.begin(), b_d.end());
      std::vector<float> out(N * OC, 99.0f);
      matmul_forward(out.data(), inp.data(), weight.data(), bias.data(), N, C, OC);
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t o = 0; o < OC; ++o) {
          double s = b_d[o];
          for (int64_t c = 0; c < C; ++c) {
            s += static_cast<double>(inp[n * C + c]) * static_cast<double>(weight[o * C + c]);
          }
          ASSERT_NEAR(out[n * OC + o], s, 1e-4 * (1 + std::abs(s)))
              << "N " << N << " C " << C << " OC " << OC << " at " << n << ", " << o;
        }
      }
      if (N > 2 && N <= 32) {  // the first 2 rows alone: the same bits
        std::vector<float> two(2 * OC);
        matmul_forward(two.data(), inp.data(), weight.data(), static_cast<const float*>(nullptr), 2,
                       C, OC);
        std::vector<float> no_bias(N * OC);
        matmul_forward(no_bias.data(), inp.data(), weight.data(),
                       static_cast<const float*>(nullptr), N, C, OC);
        for (int64_t i = 0; i < 2 * OC; ++i) ASSERT_EQ(two[i], no_bias[i]) << N << " " << i;
      }
    }
  }
}

TEST(Matmul, OneRowInFloatIsTheSameBitsAsThatRowOfABatch) {
  // A decode step of one sequence and of a batch (up to 32 rows) compute a row in one order.
  const int64_t N = 8, C = 768, OC = 512;
  const std::vector<double> inp_d = tt::random_vector(N * C, 5), w_d = tt::random_vector(OC * C, 6);
  const std::vector<float> inp(inp_d.begin(), inp_d.end()), weight(w_d.begin(), w_d.end());
  const std::vector<float> bias(OC, 0.25f);
  std::vector<float> batch(N * OC), row(OC);
  matmul_forward(batch.data(), inp.data(), weight.data(), bias.data(), N, C, OC);
  for (int64_t n = 0; n < N; ++n) {
    matmul_forward(row.data(), inp.data() + n * C, weight.data(), bias.data(), 1, C, OC);
    for (int64_t o = 0; o < OC; ++o) ASSERT_EQ(row[o], batch[n * OC + o]) << n << " " << o;
  }
}

TEST(Matmul, BackwardMatchesCentralDifferences) {
  MatmulCase k;
  std::vector<double> dinp(k.N * k.C), dweight(k.OC * k.C, 0.0), dbias(k.OC, 0.0);
  matmul_backward(dinp.data(), dweight.data(), dbias.data(), k.r.data(), k.inp.data(),
                  k.weight.data(), k.N, k.C, k.OC);
  auto loss = [&] { return k.loss(); };
  tt::expect_gradient_close("dinp", loss, k.inp, dinp, 1e-7);
  tt::expect_gradient_close("dweight", loss, k.weight, dweight, 1e-7);
  tt::expect_gradient_close("dbias", loss, k.bias, dbias, 1e-7);
}

// The checker itself must notice a gradient that is slightly wrong.
TEST(Matmul, GradCheckerRejectsACorruptedGradient) {
  MatmulCase k;
  std::vector<double> dinp(k.N * k.C), dweight(k.OC * k.C, 0.0), dbias(k.OC, 0.0);
  matmul_backward(dinp.data(), dweight.data(), dbias.data(), k.r.data(), k.inp.data(),
                  k.weight.data(), k.N, k.C, k.OC);
  dbias[3] *= 1.0001;
  const tt::GradCheckResult r = tt::check_gradient([&] { return k.loss(); }, k.bias, dbias);
  EXPECT_EQ(r.worst_index, 3);
  EXPECT_GT(r.max_rel_error, 1e-5);
}

TEST(Matmul, ParameterGradsAccumulateAndDinpOverwrites) {
  MatmulCase k;
  std::vector<double> dinp(k.N * k.C), dweight(k.OC * k.C, 0.0), dbias(k.OC, 0.0);
  matmul_backward(dinp.data(), dweight.data(), dbias.data(), k.r.data(), k.inp.data(),
                  k.weight.data(), k.N, k.C, k.OC);

  std::vector<double> dinp2(k.N * k.C, 99.0), dweight2(k.OC * k.C, 0.5), dbias2(k.OC, -0.25);
  matmul_backward(dinp2.data(), dweight2.data(), dbias2.data(), k.r.data(), k.inp.data(),
                  k.weight.data(), k.N, k.C, k.OC);
  tt::expect_all_close("dinp overwrites", dinp2, dinp, 1e-12);
  for (auto& x : dweight) x += 0.5;
  for (auto& x : dbias) x -= 0.25;
  tt::expect_all_close("dweight accumulates", dweight2, dweight, 1e-12);
  tt::expect_all_close("dbias accumulates", dbias2, dbias, 1e-12);
}

TEST(Matmul, NullDinpAndDbiasAreSkipped) {
  MatmulCase k;
  std::vector<double> dweight(k.OC * k.C, 0.0), dweight_ref(k.OC * k.C, 0.0);
  std::vector<double> dinp(k.N * k.C), dbias(k.OC, 0.0);
  matmul_backward(dinp.data(), dweight_ref.data(), dbias.data(), k.r.data(), k.inp.data(),
                  k.weight.data(), k.N, k.C, k.OC);
  matmul_backward(static_cast<double*>(nullptr), dweight.data(), static_cast<double*>(nullptr),
                  k.r.data(), k.inp.data(), k.weight.data(), k.N, k.C, k.OC);
  tt::expect_all_close("dweight with null dinp/dbias", dweight, dweight_ref, 1e-12);
}

// Sizes above the parallel threshold, so the threaded bias paths run too.
TEST(Matmul, FloatAgreesWithDouble) {
  const int64_t N = 256, C = 64, OC = 96;
  auto inp = tt::random_vector(N * C, 11), weight = tt::random_vector(OC * C, 12, 0.1);
  auto bias = tt::random_vector(OC, 13), dout = tt::random_vector(N * OC, 14);
  std::vector<double> out(N * OC), dinp(N * C), dweight(OC * C, 0.0), dbias(OC, 0.0);
  matmul_forward(out.data(), inp.data(), weight.data(), bias.data(), N, C, OC);
  matmul_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(), weight.data(),
                  N, C, OC);

  auto inp_f = tt::cast_vector<float>(inp), weight_f = tt::cast_vector<float>(weight);
  auto bias_f = tt::cast_vector<float>(bias), dout_f = tt::cast_vector<float>(dout);
  std::vector<float> out_f(N * OC), dinp_f(N * C), dweight_f(OC * C, 0.0f), dbias_f(OC, 0.0f);
  matmul_forward(out_f.data(), inp_f.data(), weight_f.data(), bias_f.data(), N, C, OC);
  matmul_backward(dinp_f.data(), dweight_f.data(), dbias_f.data(), dout_f.data(), inp_f.data(),
                  weight_f.data(), N, C, OC);
  // Sums of up to 256 terms of mixed sign in float: near-cancelling elements are judged against
  // the tensor's rms.
  tt::expect_all_close("out float vs double", out_f, out, 1e-5, tt::rms(out));
  tt::expect_all_close("dinp float vs double", dinp_f, dinp, 1e-5, tt::rms(dinp));
  tt::expect_all_close("dweight float vs double", dweight_f, dweight, 1e-5, tt::rms(dweight));
  tt::expect_all_close("dbias float vs double", dbias_f, dbias, 1e-5, tt::rms(dbias));
}

}  // namespace
}  // namespace tessera::backends::cpu
