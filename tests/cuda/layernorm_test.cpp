// CUDA layernorm against its CPU twin (backends/cpu/layernorm.h), which runs in double on the same
// fp32 inputs so the comparison measures the GPU's error alone. fp32: relative 1e-5 (the GPU sums
// rows by warp and columns in 16 interleaved strands, a different order from the CPU; both are
// fp32 rounding, ~1e-6 at these sizes). bf16 forward: relative 4e-3 (one round-to-nearest-even of
// the output to 8 significant bits is at most 2^-9 ≈ 2e-3 per element).
#include "backends/cuda/layernorm.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <vector>

#include "backends/cpu/layernorm.h"
#include "backends/cuda/device.h"
#include "cuda_test_util.h"

namespace tessera::backends::cuda {
namespace {

namespace tt = tessera::testing;

struct Shape {
  int64_t N, C;
};
// Rows and widths off every block multiple, GPT-2 widths, and (600000, 4): more rows than the
// grid's first pass (65536 blocks of 8 rows) and fewer columns than a warp.
constexpr Shape kForwardShapes[] = {{37, 100}, {256, 768}, {5, 1600}, {600000, 4}};
constexpr Shape kBackwardShapes[] = {{37, 100}, {256, 768}, {4096, 100}};

std::vector<double> widen(const std::vector<float>& v) { return {v.begin(), v.end()}; }
std::vector<float> narrow(const std::vector<double>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(v[i]);
  return out;
}

// bf16 as raw bits: round to nearest even (as __float2bfloat16_rn), and back exactly.
uint16_t to_bf16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);  // inputs here are finite
}
float from_bf16(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

// Normal inputs shifted by 1, so the mean matters.
std::vector<float> shifted_inputs(size_t n, uint32_t seed) {
  auto v = tt::random_floats(n, seed);
  for (float& x : v) x += 1.0f;
  return v;
}

TEST(CudaLayernorm, ForwardMatchesTheCpuTwin) {
  for (const auto [N, C] : kForwardShapes) {
    SCOPED_TRACE(::testing::Message() << "N " << N << " C " << C);
    const auto x = shifted_inputs(N * C, 101);
    const auto w = tt::random_floats(C, 102), b = tt::random_floats(C, 103);
    tt::DeviceArray<float> d_x(x), d_w(w), d_b(b), d_out(N * C), d_mean(N), d_rstd(N);
    d_out.poison();
    d_mean.poison();
    d_rstd.poison();
    layernorm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_x.get(), d_w.get(), d_b.get(), N,
                      C, nullptr);

    std::vector<double> out(N * C), mean(N), rstd(N);
    cpu::layernorm_forward<double>(out.data(), mean.data(), rstd.data(), widen(x).data(),
                                   widen(w).data(), widen(b).data(), N, C);
    EXPECT_LE(tt::rel_error(d_out.download(), narrow(out)), 1e-5);
    EXPECT_LE(tt::rel_error(d_mean.download(), narrow(mean)), 1e-5);
    EXPECT_LE(tt::rel_error(d_rstd.download(), narrow(rstd)), 1e-5);
  }
}

TEST(CudaLayernorm, BackwardMatchesTheCpuTwinAndAccumulates) {
  DeviceStream stream;  // an owned non-blocking stream, as the trainer will use
  for (const auto [N, C] : kBackwardShapes) {
    SCOPED_TRACE(::testing::Message() << "N " << N << " C " << C);
    const auto x = shifted_inputs(N * C, 201);
    const auto w = tt::random_floats(C, 202), dout = tt::random_floats(N * C, 203);
    // mean and rstd as forward saved them (fp32), shared by both sides.
    std::vector<double> out64(N * C), mean64(N), rstd64(N);
    const auto b = tt::random_floats(C, 204);
    cpu::layernorm_forward<double>(out64.data(), mean64.data(), rstd64.data(), widen(x).data(),
                                   widen(w).data(), widen(b).data(), N, C);
    const auto mean = narrow(mean64), rstd = narrow(rstd64);
    // Nonzero starting gradients: all three accumulate.
    const auto dinp0 = tt::random_floats(N * C, 205, 0.5f);
    const auto dw0 = tt::random_floats(C, 206, 0.5f), db0 = tt::random_floats(C, 207, 0.5f);

    tt::DeviceArray<float> d_x(x), d_w(w), d_dout(dout), d_mean(mean), d_rstd(rstd);
    tt::DeviceArray<float> d_dinp(dinp0), d_dw(dw0), d_db(db0);
    layernorm_backward(d_dinp.get(), d_dw.get(), d_db.get(), d_dout.get(), d_x.get(), d_w.get(),
                       d_mean.get(), d_rstd.get(), N, C, stream.get());

    auto dinp = widen(dinp0), dw = widen(dw0), db = widen(db0);
    cpu::layernorm_backward<double>(dinp.data(), dw.data(), db.data(), widen(dout).data(),
                                    widen(x).data(), widen(w).data(), widen(mean).data(),
                                    widen(rstd).data(), N, C);
    EXPECT_LE(tt::rel_error(d_dinp.download(), narrow(dinp)), 1e-5);
    EXPECT_LE(tt::rel_error(d_dw.download(), narrow(dw)), 1e-5);
    EXPECT_LE(tt::rel_error(d_db.download(), narrow(db)), 1e-5);
  }
}

// The parameter gradients are summed without atomics in a fixed order: the same bits every run.
TEST(CudaLayernorm, BackwardIsBitwiseDeterministic) {
  const int64_t N = 1000, C = 768;
  const auto x = tt::random_floats(N * C, 301), w = tt::random_floats(C, 302);
  const auto dout = tt::random_floats(N * C, 303);
  const auto mean = tt::random_floats(N, 304, 0.1f);
  auto rstd = tt::random_floats(N, 305, 0.1f);
  for (float& r : rstd) r += 1.0f;
  const auto dinp0 = tt::random_floats(N * C, 306), dw0 = tt::random_floats(C, 307);
  const auto db0 = tt::random_floats(C, 308);
  tt::DeviceArray<float> d_x(x), d_w(w), d_dout(dout), d_mean(mean), d_rstd(rstd);
  std::vector<float> first[3];
  for (int run = 0; run < 2; ++run) {
    tt::DeviceArray<float> d_dinp(dinp0), d_dw(dw0), d_db(db0);
    layernorm_backward(d_dinp.get(), d_dw.get(), d_db.get(), d_dout.get(), d_x.get(), d_w.get(),
                       d_mean.get(), d_rstd.get(), N, C, nullptr);
    const std::vector<float> got[3] = {d_dinp.download(), d_dw.download(), d_db.download()};
    for (int k = 0; k < 3; ++k) {
      if (run == 0) {
        first[k] = got[k];
      } else {
        EXPECT_EQ(got[k], first[k]) << "output " << k;
      }
    }
  }
  EXPECT_NE(first[1], dw0);  // the gradients did change
}

TEST(CudaLayernorm, Bf16ForwardMatchesTheCpuTwinWithinOneRounding) {
  for (const auto [N, C] : {Shape{37, 100}, Shape{256, 768}}) {
    SCOPED_TRACE(::testing::Message() << "N " << N << " C " << C);
    const auto x32 = shifted_inputs(N * C, 401);
    std::vector<uint16_t> x(N * C);
    std::vector<float> x_widened(N * C);  // the values the kernel actually sees
    for (int64_t i = 0; i < N * C; ++i) {
      x[i] = to_bf16(x32[i]);
      x_widened[i] = from_bf16(x[i]);
    }
    const auto w = tt::random_floats(C, 402), b = tt::random_floats(C, 403);
    tt::DeviceArray<uint16_t> d_x(x), d_out(N * C);
    tt::DeviceArray<float> d_w(w), d_b(b), d_mean(N), d_rstd(N);
    d_out.poison();  // 0xFFFF: a bf16 NaN
    d_mean.poison();
    d_rstd.poison();
    layernorm_forward_bf16(d_out.get(), d_mean.get(), d_rstd.get(), d_x.get(), d_w.get(), d_b.get(),
                           N, C, nullptr);

    std::vector<double> out(N * C), mean(N), rstd(N);
    cpu::layernorm_forward<double>(out.data(), mean.data(), rstd.data(), widen(x_widened).data(),
                                   widen(w).data(), widen(b).data(), N, C);
    const auto out_bits = d_out.download();
    std::vector<float> got(N * C);
    for (int64_t i = 0; i < N * C; ++i) got[i] = from_bf16(out_bits[i]);
    EXPECT_LE(tt::rel_error(got, narrow(out)), 4e-3);
    EXPECT_LE(tt::rel_error(d_mean.download(), narrow(mean)), 1e-5);
    EXPECT_LE(tt::rel_error(d_rstd.download(), narrow(rstd)), 1e-5);
  }
}

}  // namespace
}  // namespace tessera::backends::cuda
