// The few-rows kernel (backends/cpu/few_rows_matmul.h): a pre-packed weight gives the same bits as
// the plain weight; a row gives the same bits alone as in any batch of 1 to 32 rows (every tile
// shape: 1 to 3 rows with 8 panels, 4 to 6 with 4, more with 2, and the remainder tiles);
// against double for shapes whose OC is not a multiple of 16 (zero-padded panels); and the CPU
// backend frozen (packed copies) gives the bits it gives unfrozen.
#include "backends/cpu/few_rows_matmul.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "backends/backend.h"
#include "backends/cpu/matmul.h"
#include "grad_check.h"

namespace tessera::backends::cpu {
namespace {

namespace tt = tessera::testing;

std::vector<float> floats(int64_t n, uint64_t seed) {
  const std::vector<double> d = tt::random_vector(n, seed);
  return {d.begin(), d.end()};
}

constexpr std::pair<int64_t, int64_t> kShapes[] = {{64, 100}, {37, 10}, {5, 129}, {200, 48}};

TEST(FewRowsMatmul, PackedAndPlainWeightsGiveTheSameBitsAndMatchDouble) {
  for (const auto& [C, OC] : kShapes) {
    const std::vector<float> w = floats(OC * C, 2), bias = floats(OC, 3), inp = floats(32 * C, 1);
    const PackedWeight packed(w.data(), OC, C);
    for (const int64_t N : {1, 2, 3, 4, 6, 7, 12, 13, 25, 32}) {
      std::vector<float> a(N * OC, 99.0f), b(N * OC, 98.0f);
      few_rows_forward(a.data(), inp.data(), packed, bias.data(), N);
      few_rows_forward(b.data(), inp.data(), w.data(), bias.data(), N, C, OC);
      for (int64_t i = 0; i < N * OC; ++i) ASSERT_EQ(a[i], b[i]) << "N " << N << " at " << i;
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t o = 0; o < OC; ++o) {
          double s = bias[o];
          for (int64_t c = 0; c < C; ++c) s += double{inp[n * C + c]} * w[o * C + c];
          ASSERT_NEAR(a[n * OC + o], s, 1e-5 * (1 + std::abs(s))) << N << " " << n << " " << o;
        }
      }
    }
  }
}

TEST(FewRowsMatmul, ARowAloneIsTheSameBitsAsInEveryBatchSize) {
  for (const auto& [C, OC] : kShapes) {
    const std::vector<float> w = floats(OC * C, 5), inp = floats(32 * C, 4);
    const PackedWeight packed(w.data(), OC, C);
    std::vector<std::vector<float>> alone(32, std::vector<float>(OC));
    for (int64_t n = 0; n < 32; ++n) {
      few_rows_forward(alone[n].data(), inp.data() + n * C, packed, nullptr, 1);
    }
    for (int64_t N = 2; N <= 32; ++N) {
      std::vector<float> batch(N * OC);
      few_rows_forward(batch.data(), inp.data(), packed, nullptr, N);
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t o = 0; o < OC; ++o) {
          ASSERT_EQ(batch[n * OC + o], alone[n][o]) << "C " << C << " N " << N << " row " << n;
        }
      }
    }
  }
}

TEST(FewRowsMatmul, FrozenBackendGivesTheBitsOfTheUnfrozenOne) {
  Backend& be = cpu_backend();
  const int64_t C = 48, OC = 70;
  std::vector<float> w = floats(OC * C, 7), bias = floats(OC, 8), inp = floats(40 * C, 9);
  for (const int64_t N : {1, 5, 32, 40}) {  // 40: past kFewRows (unfrozen, the GEMM)
    std::vector<float> plain(N * OC), frozen(N * OC), gelu(N * OC), pre(N * OC), alone(OC);
    be.matmul_forward(plain.data(), inp.data(), w.data(), bias.data(), N, C, OC);
    be.freeze_weights(true);
    be.matmul_forward(frozen.data(), inp.data(), w.data(), bias.data(), N, C, OC);
    be.matmul_gelu_forward(gelu.data(), pre.data(), inp.data(), w.data(), bias.data(), N, C, OC);
    // Frozen, every row count takes the packed kernel: each row is the bits it gets alone.
    for (int64_t n = 0; n < N; ++n) {
      be.matmul_forward(alone.data(), inp.data() + n * C, w.data(), bias.data(), 1, C, OC);
      EXPECT_TRUE(std::equal(alone.begin(), alone.end(), frozen.begin() + n * OC))
          << "row " << n << " of " << N;
    }
    be.freeze_weights(false);
    if (N <= kFewRows) {
      EXPECT_EQ(plain, frozen) << N;  // the same kernel, plain and packed
    }
    EXPECT_EQ(frozen, pre) << N;
  }
  // Unfrozen, a changed weight is seen at once (no stale packed copy is kept).
  be.freeze_weights(true);
  std::vector<float> before(OC), after(OC);
  be.matmul_forward(before.data(), inp.data(), w.data(), nullptr, 1, C, OC);
  be.freeze_weights(false);
  for (float& x : w) x *= 2;
  be.matmul_forward(after.data(), inp.data(), w.data(), nullptr, 1, C, OC);
  for (int64_t o = 0; o < OC; ++o) EXPECT_EQ(after[o], 2 * before[o]) << o;
}

}  // namespace
}  // namespace tessera::backends::cpu
