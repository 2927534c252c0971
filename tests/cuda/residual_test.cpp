// CUDA residual helpers against their CPU twin (backends/cpu/residual.h). The element-wise ops do
// one IEEE operation per element, so they must equal the CPU bit for bit; sum_squares adds exact
// double squares in another order: relative 1e-10 (double rounding over up to 5e6 terms), and
// the same bits on every run.
#include "backends/cuda/residual.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "backends/cpu/residual.h"
#include "cuda_test_util.h"

namespace tessera::backends::cuda {
namespace {

namespace tt = tessera::testing;

// Off every block multiple, realistic, and past the grid's first pass (65536 blocks of 256).
constexpr int64_t kSizes[] = {1, 37, 100003, (int64_t{1} << 24) + 37};

TEST(CudaResidual, ForwardEqualsTheCpuTwinAndMayAlias) {
  for (int64_t n : kSizes) {
    SCOPED_TRACE(::testing::Message() << "n " << n);
    const auto a = tt::random_floats(n, 801), b = tt::random_floats(n, 802);
    tt::DeviceArray<float> d_a(a), d_b(b), d_out(n);
    d_out.poison();
    residual_forward(d_out.get(), d_a.get(), d_b.get(), n, nullptr);
    std::vector<float> ref(n);
    cpu::residual_forward(ref.data(), a.data(), b.data(), n);
    EXPECT_EQ(d_out.download(), ref);
    residual_forward(d_a.get(), d_a.get(), d_b.get(), n, nullptr);  // out aliases a
    EXPECT_EQ(d_a.download(), ref);
  }
}

TEST(CudaResidual, AddInplaceAccumulatesAsTheCpuTwin) {
  for (int64_t n : kSizes) {
    SCOPED_TRACE(::testing::Message() << "n " << n);
    auto acc = tt::random_floats(n, 803);
    const auto x = tt::random_floats(n, 804);
    tt::DeviceArray<float> d_acc(acc), d_x(x);
    add_inplace(d_acc.get(), d_x.get(), n, nullptr);
    cpu::add_inplace(acc.data(), x.data(), n);
    EXPECT_EQ(d_acc.download(), acc);
  }
}

TEST(CudaResidual, ScaleInplaceEqualsTheCpuTwin) {
  for (int64_t n : kSizes) {
    SCOPED_TRACE(::testing::Message() << "n " << n);
    auto x = tt::random_floats(n, 805);
    tt::DeviceArray<float> d_x(x);
    scale_inplace(d_x.get(), 0.37f, n, nullptr);
    cpu::scale_inplace(x.data(), 0.37f, n);
    EXPECT_EQ(d_x.download(), x);
  }
}

TEST(CudaResidual, AddBiasBroadcastsOverRowsAsTheCpuTwin) {
  struct Shape {
    int64_t N, C;
  };
  for (const auto [N, C] : {Shape{1, 1}, Shape{37, 100}, Shape{256, 768}, Shape{70000, 300}}) {
    SCOPED_TRACE(::testing::Message() << "N " << N << " C " << C);
    auto out = tt::random_floats(N * C, 806);
    const auto bias = tt::random_floats(C, 807);
    tt::DeviceArray<float> d_out(out), d_bias(bias);
    add_bias(d_out.get(), d_bias.get(), N, C, nullptr);
    cpu::add_bias(out.data(), bias.data(), N, C);
    EXPECT_EQ(d_out.download(), out);
  }
}

// The result lives in one device double; download it.
double download_double(const tt::DeviceArray<double>& d) { return d.download()[0]; }

TEST(CudaResidual, SumSquaresMatchesTheCpuTwinAndIsDeterministic) {
  tt::DeviceArray<double> d_partials(kSumSquaresPartials), d_out(1);
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{37}, int64_t{100003}, int64_t{5000000}}) {
    SCOPED_TRACE(::testing::Message() << "n " << n);
    const auto x = tt::random_floats(n, 808);
    tt::DeviceArray<float> d_x(std::max<int64_t>(n, 1));  // no zero-byte upload for n = 0
    if (n > 0) d_x.upload(x);
    d_out.poison();  // 0xFF bytes: a double NaN
    d_partials.poison();
    sum_squares(d_out.get(), d_partials.get(), d_x.get(), n, nullptr);
    const double got = download_double(d_out);
    const double ref = cpu::sum_squares(x.data(), n);
    if (n == 0) {
      EXPECT_EQ(got, 0.0);
      continue;
    }
    ASSERT_FALSE(std::isnan(got));
    EXPECT_LE(std::fabs(got - ref), 1e-10 * ref) << "got " << got << " want " << ref;
    sum_squares(d_out.get(), d_partials.get(), d_x.get(), n, nullptr);
    EXPECT_EQ(download_double(d_out), got);  // bit for bit on a second run
  }
}

}  // namespace
}  // namespace tessera::backends::cuda
