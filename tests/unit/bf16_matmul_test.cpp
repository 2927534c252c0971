// The CPU backend's bf16 GEMMs (Backend::set_bf16_matmuls, train.dtype: bf16): each of
// matmul_forward, matmul_gelu_forward and matmul_backward equals the fp32 op run on operands
// rounded to bf16 beforehand, across the backend's row blocks (N = 600 > 2 x 256), and is not
// the unrounded fp32 result. The products are exact, so only the fp32 summation order differs
// (the row blocks change OpenBLAS's blocking): relative 1e-6, against ~1e-2 for the rounding.
// Frozen weights (bf16 generation) are rounded and packed once.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/bf16_round.h"
#include "backends/cpu/cpu_backend.h"
#include "core/error.h"
#include "grad_check.h"

namespace tessera::backends {
namespace {

namespace tt = tessera::testing;

std::vector<float> floats(int64_t n, uint64_t seed, double scale = 1.0) {
  return tt::cast_vector<float>(tt::random_vector(n, seed, scale));
}
std::vector<float> rounded(std::vector<float> x) {
  cpu::round_to_bf16(x.data(), x.data(), static_cast<int64_t>(x.size()));
  return x;
}
// Largest |a - b| over the largest |b|.
double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::fabs(double{a[i]} - b[i]));
    scale = std::max(scale, std::fabs(double{b[i]}));
  }
  return worst / scale;
}

constexpr int64_t N = 600, C = 96, OC = 72;

TEST(Bf16Matmul, ForwardIsTheFp32GemmOfRoundedOperands) {
  const auto inp = floats(N * C, 1), weight = floats(OC * C, 2, 0.3), bias = floats(OC, 3);
  CpuBackend bf16, fp32;
  bf16.set_bf16_matmuls(true);
  std::vector<float> got(N * OC), want(N * OC), plain(N * OC);
  bf16.matmul_forward(got.data(), inp.data(), weight.data(), bias.data(), N, C, OC);
  const auto ri = rounded(inp), rw = rounded(weight);
  fp32.matmul_forward(want.data(), ri.data(), rw.data(), bias.data(), N, C, OC);
  fp32.matmul_forward(plain.data(), inp.data(), weight.data(), bias.data(), N, C, OC);
  EXPECT_LT(rel_diff(got, want), 1e-6) << "bf16 forward vs the fp32 GEMM on rounded operands";
  EXPECT_GT(rel_diff(got, plain), 1e-4) << "the operands were not rounded";
  // The inputs are untouched (the rounding works on copies).
  EXPECT_EQ(inp, floats(N * C, 1));
  EXPECT_EQ(weight, floats(OC * C, 2, 0.3));

  std::vector<float> out(N * OC), pre(N * OC), want_out(N * OC), want_pre(N * OC);
  bf16.matmul_gelu_forward(out.data(), pre.data(), inp.data(), weight.data(), bias.data(), N, C,
                           OC);
  fp32.matmul_gelu_forward(want_out.data(), want_pre.data(), ri.data(), rw.data(), bias.data(), N,
                           C, OC);
  EXPECT_LT(rel_diff(pre, want_pre), 1e-6);
  EXPECT_LT(rel_diff(out, want_out), 1e-6);
}

TEST(Bf16Matmul, BackwardIsTheFp32GemmOfRoundedOperands) {
  const auto inp = floats(N * C, 4), weight = floats(OC * C, 5, 0.3), dout = floats(N * OC, 6);
  CpuBackend bf16, fp32;
  bf16.set_bf16_matmuls(true);
  // The gradients accumulate: start both from the same nonzero values.
  const auto dw0 = floats(OC * C, 7, 0.1), db0 = floats(OC, 8, 0.1);
  std::vector<float> dinp(N * C), dw = dw0, db = db0;
  bf16.matmul_backward(dinp.data(), dw.data(), db.data(), dout.data(), inp.data(), weight.data(), N,
                       C, OC);
  const auto ri = rounded(inp), rw = rounded(weight), rd = rounded(dout);
  std::vector<float> want_dinp(N * C), want_dw = dw0, want_db = db0;
  fp32.matmul_backward(want_dinp.data(), want_dw.data(), want_db.data(), rd.data(), ri.data(),
                       rw.data(), N, C, OC);
  EXPECT_LT(rel_diff(dinp, want_dinp), 1e-6);
  EXPECT_LT(rel_diff(dw, want_dw), 1e-6);
  EXPECT_LT(rel_diff(db, want_db), 1e-6);
  std::vector<float> plain_dinp(N * C), plain_dw = dw0, plain_db = db0;
  fp32.matmul_backward(plain_dinp.data(), plain_dw.data(), plain_db.data(), dout.data(), inp.data(),
                       weight.data(), N, C, OC);
  EXPECT_GT(rel_diff(dinp, plain_dinp), 1e-4);
  EXPECT_GT(rel_diff(dw, plain_dw), 1e-4);
  // A null dinp is skipped, as in fp32.
  std::vector<float> dw2 = dw0;
  bf16.matmul_backward(nullptr, dw2.data(), nullptr, dout.data(), inp.data(), weight.data(), N, C,
                       OC);
  EXPECT_LT(rel_diff(dw2, want_dw), 1e-6);
}

// Frozen (generation and serving in bf16): the weight is rounded and packed once, and each row is
// computed by the few-rows kernel in its fixed order. So a frozen call equals the unfrozen bf16
// call bitwise up to cpu::kFewRows rows (both take the few-rows kernel on the same rounded
// operands), and past them each row equals that row computed alone. Freezing keeps one packed
// copy per weight; switching the precision while frozen is refused.
TEST(Bf16Matmul, FrozenWeightsAreRoundedOnceAndRowsStayIndependent) {
  const auto inp = floats(N * C, 11), weight = floats(OC * C, 12, 0.3), bias = floats(OC, 13);
  CpuBackend frozen, unfrozen, fp32;
  frozen.set_bf16_matmuls(true);
  unfrozen.set_bf16_matmuls(true);
  frozen.freeze_weights(true);
  fp32.freeze_weights(true);
  constexpr int64_t kFew = 7;
  std::vector<float> got(kFew * OC), want(kFew * OC), plain(kFew * OC);
  frozen.matmul_forward(got.data(), inp.data(), weight.data(), bias.data(), kFew, C, OC);
  unfrozen.matmul_forward(want.data(), inp.data(), weight.data(), bias.data(), kFew, C, OC);
  fp32.matmul_forward(plain.data(), inp.data(), weight.data(), bias.data(), kFew, C, OC);
  EXPECT_EQ(got, want) << "frozen bf16 vs unfrozen bf16, " << kFew << " rows";
  EXPECT_GT(rel_diff(got, plain), 1e-4) << "frozen bf16 did not round (fp32 frozen result)";
  EXPECT_EQ(frozen.frozen_copy_bytes(), fp32.frozen_copy_bytes()) << "one packed copy per weight";
  EXPECT_GT(frozen.frozen_copy_bytes(), 0u);
  // A second weight gets its own copy (each is kept under its own address).
  const auto weight2 = floats(OC * C, 14, 0.3);
  frozen.matmul_forward(got.data(), inp.data(), weight2.data(), bias.data(), kFew, C, OC);
  unfrozen.matmul_forward(want.data(), inp.data(), weight2.data(), bias.data(), kFew, C, OC);
  EXPECT_EQ(got, want) << "the second weight";
  EXPECT_EQ(frozen.frozen_copy_bytes(), 2 * fp32.frozen_copy_bytes());

  // Past kFewRows, and across the 256-row rounding blocks: every row as computed alone.
  std::vector<float> all(N * OC), row(OC);
  frozen.matmul_forward(all.data(), inp.data(), weight.data(), bias.data(), N, C, OC);
  for (int64_t n : {int64_t{0}, int64_t{33}, int64_t{255}, int64_t{256}, N - 1}) {
    frozen.matmul_forward(row.data(), inp.data() + n * C, weight.data(), bias.data(), 1, C, OC);
    EXPECT_TRUE(std::equal(row.begin(), row.end(), all.begin() + n * OC)) << "row " << n;
  }
  // And it is the fp32 product of the rounded operands (another summation order: 1e-6).
  std::vector<float> ref(N * OC);
  const auto ri = rounded(inp), rw = rounded(weight);
  CpuBackend().matmul_forward(ref.data(), ri.data(), rw.data(), bias.data(), N, C, OC);
  EXPECT_LT(rel_diff(all, ref), 1e-6);

  EXPECT_THROW(frozen.set_bf16_matmuls(false), Error) << "the packed copies are rounded";
  frozen.freeze_weights(false);
  EXPECT_EQ(frozen.frozen_copy_bytes(), 0u);
  frozen.set_bf16_matmuls(false);  // allowed once nothing is frozen
}

}  // namespace
}  // namespace tessera::backends
