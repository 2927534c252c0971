// CUDA GELU against its CPU twin (backends/cpu/gelu.h) run in double on the same fp32 inputs.
// fp32 forward and backward: relative 1e-5 (expf and the CPU's exp differ by an ulp or two).
// bf16 forward: every element within 2^-8 of the reference, relative (one round-to-nearest-even
// to 8 significant bits is at most 2^-9), and 4e-3 over the whole tensor.
#include "backends/cuda/gelu.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "backends/cpu/gelu.h"
#include "cuda_test_util.h"

namespace tessera::backends::cuda {
namespace {

namespace tt = tessera::testing;

// Off every block multiple, a GPT-2 MLP activation (B·T = 256, 4C = 3072), and more than the
// grid's first pass (65536 blocks of 256).
constexpr int64_t kSizes[] = {1, 37, 100, 256 * 3072, (int64_t{1} << 24) + 37};

std::vector<double> widen(const std::vector<float>& v) { return {v.begin(), v.end()}; }
std::vector<float> narrow(const std::vector<double>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(v[i]);
  return out;
}
uint16_t to_bf16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);  // inputs here are finite
}
float from_bf16(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

// Normal(0, 2) inputs with the tails pinned: a few very large and very negative values, where
// exp overflows or underflows, must give 0 and x exactly, never NaN.
std::vector<float> gelu_inputs(int64_t n, uint32_t seed) {
  auto x = tt::random_floats(n, seed, 2.0f);
  const float extremes[] = {-100.0f, -20.0f, -9.5f, 0.0f, 9.5f, 20.0f, 100.0f};
  for (size_t k = 0; k < std::size(extremes) && static_cast<int64_t>(k) < n; ++k) {
    x[(k * 7919) % n] = extremes[k];
  }
  return x;
}

TEST(CudaGelu, ForwardMatchesTheCpuTwin) {
  for (int64_t n : kSizes) {
    SCOPED_TRACE(::testing::Message() << "n " << n);
    const auto x = gelu_inputs(n, 501);
    tt::DeviceArray<float> d_x(x), d_out(n);
    d_out.poison();
    gelu_forward(d_out.get(), d_x.get(), n, nullptr);
    std::vector<double> ref(n);
    cpu::gelu_forward<double>(ref.data(), widen(x).data(), n);
    EXPECT_LE(tt::rel_error(d_out.download(), narrow(ref)), 1e-5);
  }
}

TEST(CudaGelu, ForwardInPlace) {
  const int64_t n = 1000;
  const auto x = gelu_inputs(n, 502);
  tt::DeviceArray<float> d_x(x), d_out(n);
  gelu_forward(d_out.get(), d_x.get(), n, nullptr);
  gelu_forward(d_x.get(), d_x.get(), n, nullptr);  // out aliases inp
  EXPECT_EQ(d_x.download(), d_out.download());
}

TEST(CudaGelu, BackwardMatchesTheCpuTwinAndOverwrites) {
  for (int64_t n : kSizes) {
    SCOPED_TRACE(::testing::Message() << "n " << n);
    const auto x = gelu_inputs(n, 601), dout = tt::random_floats(n, 602);
    tt::DeviceArray<float> d_x(x), d_dout(dout), d_dinp(n);
    d_dinp.poison();  // overwritten, not accumulated: poison must vanish
    gelu_backward(d_dinp.get(), d_x.get(), d_dout.get(), n, nullptr);
    std::vector<double> ref(n);
    cpu::gelu_backward<double>(ref.data(), widen(x).data(), widen(dout).data(), n);
    EXPECT_LE(tt::rel_error(d_dinp.download(), narrow(ref)), 1e-5);
    // dinp may alias dout.
    gelu_backward(d_dout.get(), d_x.get(), d_dout.get(), n, nullptr);
    EXPECT_EQ(d_dout.download(), d_dinp.download());
  }
}

TEST(CudaGelu, Bf16ForwardMatchesTheCpuTwinWithinOneRounding) {
  for (int64_t n : {int64_t{37}, int64_t{256 * 3072}}) {
    SCOPED_TRACE(::testing::Message() << "n " << n);
    const auto x32 = gelu_inputs(n, 701);
    std::vector<uint16_t> x(n);
    std::vector<float> x_widened(n);  // the values the kernel actually sees
    for (int64_t i = 0; i < n; ++i) {
      x[i] = to_bf16(x32[i]);
      x_widened[i] = from_bf16(x[i]);
    }
    tt::DeviceArray<uint16_t> d_x(x), d_out(n);
    d_out.poison();  // 0xFFFF: a bf16 NaN
    gelu_forward_bf16(d_out.get(), d_x.get(), n, nullptr);
    std::vector<double> ref(n);
    cpu::gelu_forward<double>(ref.data(), widen(x_widened).data(), n);
    const auto bits = d_out.download();
    std::vector<float> got(n);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      got[i] = from_bf16(bits[i]);
      // 2^-8 relative, plus an absolute floor for results near the denormal range.
      if (!(std::fabs(got[i] - ref[i]) <= std::ldexp(std::fabs(ref[i]), -8) + 1e-30)) {
        if (bad++ < 5)
          ADD_FAILURE() << "i " << i << " x " << x_widened[i] << " got " << got[i] << " want "
                        << ref[i];
      }
    }
    EXPECT_EQ(bad, 0);
    EXPECT_LE(tt::rel_error(got, narrow(ref)), 4e-3);
  }
}

}  // namespace
}  // namespace tessera::backends::cuda
