// Every op of the Backend interface through both backends, in the manner of ggml's
// tests/test-backend-ops.cpp: seeded random inputs, CpuBackend on host buffers and CudaBackend on
// device tensors (copied in, run, copied out), compared as ||cuda - cpu|| / ||cpu|| per op.
// Tolerances: 0 (bit for bit) where both sides do the same IEEE operations per element (copies,
// element-wise adds and scales, maxima, the embeddings' ordered sums); 1e-5, the project's fp32
// bar, where the order of fp32 sums or expf/tanhf against libm differ (GEMMs are true fp32 on both:
// CUBLAS_COMPUTE_32F, so each side is within ~sqrt(K) · 6e-8 of exact); 1e-6 for AdamW (1 ulp per
// fused multiply-add, as tests/cuda/adamw_test.cu); 1e-10 for the double reductions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda_factory.h"
#include "core/bf16.h"
#include "cuda_test_util.h"

namespace tessera::backends {
namespace {

namespace tt = tessera::testing;

constexpr double kF32Tolerance = 1e-5;
constexpr double kAdamWTolerance = 1e-6;
constexpr double kDoubleSumTolerance = 1e-10;

template <typename T>
constexpr core::DType dtype_of() {
  static_assert(
      std::is_same_v<T, float> || std::is_same_v<T, int32_t> || std::is_same_v<T, uint16_t>,
      "f32, i32 or bf16 (uint16 bits) operands");
  return std::is_same_v<T, float>     ? core::DType::kF32
         : std::is_same_v<T, int32_t> ? core::DType::kI32
                                      : core::DType::kBF16;
}

// One operand in both backends' memory: `host` is the CPU backend's, `dev` a tensor of the CUDA
// backend holding the same values when made. After the op each holds its own backend's result.
template <typename T>
struct Twin {
  std::vector<T> host;
  core::Tensor dev;
  T* h() { return host.data(); }
  T* d() const { return dev.data<T>(); }
};

std::vector<int32_t> random_ints(int64_t n, int32_t lo, int32_t hi, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

class CudaBackendOps : public ::testing::Test {
 protected:
  void SetUp() override {
    auto made = make_cuda_backend(0, 1);
    ASSERT_TRUE(made.is_ok()) << made.status().message();
    gpu_ = std::move(made).value();
  }

  template <typename T>
  Twin<T> twin(std::vector<T> host) {
    const auto n = static_cast<int64_t>(host.size());
    Twin<T> t{std::move(host), gpu_->zeros({n}, dtype_of<T>())};
    gpu_->copy_to_device(t.d(), t.h(), n * sizeof(T));
    return t;
  }
  // An OVERWRITTEN output: NaN on both sides, so an element one backend leaves unwritten fails.
  Twin<float> output(int64_t n) { return twin(std::vector<float>(n, NAN)); }
  Twin<float> random(int64_t n, uint32_t seed, float scale = 1.0f) {
    return twin(tt::random_floats(n, seed, scale));
  }

  template <typename T>
  std::vector<T> fetch(const Twin<T>& t) {
    std::vector<T> out(t.host.size());
    gpu_->copy_to_host(out.data(), t.d(), out.size() * sizeof(T));
    return out;
  }
  void expect_close(const Twin<float>& t, double tolerance, const std::string& what) {
    EXPECT_LE(tt::rel_error(fetch(t), t.host), tolerance) << what;
  }
  // bf16 activations: random values rounded to bf16 (raw bits), or NaN bits for an output.
  Twin<uint16_t> random_bf16(int64_t n, uint32_t seed, float scale = 1.0f) {
    std::vector<uint16_t> bits(n);
    const std::vector<float> x = tt::random_floats(n, seed, scale);
    for (int64_t i = 0; i < n; ++i) bits[i] = core::to_bf16(x[i]);
    return twin(std::move(bits));
  }
  Twin<uint16_t> output_bf16(int64_t n) { return twin(std::vector<uint16_t>(n, 0x7FC0)); }
  // Both sides' bf16 values as floats, compared as expect_close does.
  void expect_close_bf16(const Twin<uint16_t>& t, double tolerance, const std::string& what) {
    const std::vector<uint16_t> dev = fetch(t);
    std::vector<float> got(dev.size()), want(dev.size());
    for (size_t i = 0; i < dev.size(); ++i) {
      got[i] = core::from_bf16(dev[i]);
      want[i] = core::from_bf16(t.host[i]);
    }
    EXPECT_LE(tt::rel_error(got, want), tolerance) << what;
  }
  template <typename T>
  void expect_equal(const Twin<T>& t, const std::string& what) {
    EXPECT_EQ(fetch(t), t.host) << what;
  }

  // bf16 GEMM operands on both backends (train.dtype: bf16) until the returned guard goes.
  struct Bf16Matmuls {
    CpuBackend& cpu;
    Backend& gpu;
    ~Bf16Matmuls() {
      cpu.set_bf16_matmuls(false);
      gpu.set_bf16_matmuls(false);
    }
  };
  Bf16Matmuls bf16_matmuls() {
    cpu_.set_bf16_matmuls(true);
    gpu_->set_bf16_matmuls(true);
    return {cpu_, *gpu_};
  }

  CpuBackend cpu_;
  std::unique_ptr<Backend> gpu_;
};

// ---- Backend plumbing ---------------------------------------------------------------------------

TEST_F(CudaBackendOps, FactoryRejectsABadLocalRankNamingIt) {
  const auto made = make_cuda_backend(3, 2);
  ASSERT_FALSE(made.is_ok());
  EXPECT_NE(made.status().message().find("local rank 3"), std::string::npos)
      << made.status().message();
  EXPECT_TRUE(cuda_backend_built());
}

TEST_F(CudaBackendOps, DescribesItsDeviceAndOwnsAStream) {
  EXPECT_EQ(gpu_->device(), core::Device::kCuda);
  EXPECT_EQ(gpu_->describe().rfind("cuda:", 0), 0u) << gpu_->describe();
  EXPECT_NE(gpu_->stream(), nullptr);  // its own non-blocking stream, not the legacy default
}

TEST_F(CudaBackendOps, ZerosAreZeroedDeviceTensors) {
  for (const auto dtype : {core::DType::kF32, core::DType::kI32, core::DType::kBF16}) {
    const core::Tensor t = gpu_->zeros({3, 37, 5}, dtype);
    EXPECT_EQ(t.device(), core::Device::kCuda);
    EXPECT_EQ(t.dtype(), dtype);
    EXPECT_EQ(t.shape(), (core::Shape{3, 37, 5}));
    std::vector<unsigned char> host(t.bytes(), 0xAB);
    gpu_->copy_to_host(host.data(), t.raw(), host.size());
    EXPECT_EQ(host, std::vector<unsigned char>(t.bytes(), 0));
  }
  EXPECT_EQ(gpu_->zeros({0}, core::DType::kF32).numel(), 0);  // an empty tensor is allowed
}

TEST_F(CudaBackendOps, CopiesFillsAndRoundTrips) {
  constexpr int64_t n = 100003;
  auto src = random(n, 11);
  expect_equal(src, "copy_to_device then copy_to_host");

  auto dst = output(n);
  cpu_.copy(dst.h(), src.h(), n * sizeof(float));
  gpu_->copy(dst.d(), src.d(), n * sizeof(float));
  expect_equal(dst, "copy");

  cpu_.fill_zero(dst.h(), 1000 * sizeof(float));
  gpu_->fill_zero(dst.d(), 1000 * sizeof(float));
  expect_equal(dst, "fill_zero of a prefix");

  cpu_.fill(dst.h() + 7, -2.5f, n - 7);
  gpu_->fill(dst.d() + 7, -2.5f, n - 7);
  gpu_->synchronize();
  expect_equal(dst, "fill");
}

TEST_F(CudaBackendOps, ProfilingAddsWallTimeToTheOpsFamily) {
  constexpr int64_t N = 64, C = 128, OC = 256;
  auto inp = random(N * C, 21), weight = random(OC * C, 22), out = output(N * OC);
  EXPECT_FALSE(gpu_->profiling());
  gpu_->matmul_forward(out.d(), inp.d(), weight.d(), nullptr, N, C, OC);
  EXPECT_EQ(gpu_->kernel_times().total(), 0.0);  // off by default: nothing timed
  gpu_->set_profiling(true);
  gpu_->matmul_forward(out.d(), inp.d(), weight.d(), nullptr, N, C, OC);
  gpu_->gelu_forward(out.d(), out.d(), N * OC);
  gpu_->set_profiling(false);
  EXPECT_GT(gpu_->kernel_times().matmul, 0.0);
  EXPECT_GT(gpu_->kernel_times().gelu, 0.0);
  EXPECT_EQ(gpu_->kernel_times().attention, 0.0);
}

// ---- Linear layers ------------------------------------------------------------------------------

// OC = 300 takes our GELU kernel after the GEMM (cuBLASLt's epilogue needs OC % 8 == 0); OC = 256
// the fused GELU_AUX_BIAS epilogue. 1e-5.
TEST_F(CudaBackendOps, MatmulForwardAndGeluEpilogue) {
  for (const int64_t OC : {int64_t{300}, int64_t{256}}) {
    SCOPED_TRACE(::testing::Message() << "OC " << OC);
    constexpr int64_t N = 37, C = 100;
    auto inp = random(N * C, 31), weight = random(OC * C, 32, 0.1f), bias = random(OC, 33);
    auto out = output(N * OC);
    cpu_.matmul_forward(out.h(), inp.h(), weight.h(), bias.h(), N, C, OC);
    gpu_->matmul_forward(out.d(), inp.d(), weight.d(), bias.d(), N, C, OC);
    expect_close(out, kF32Tolerance, "matmul_forward");
    cpu_.matmul_forward(out.h(), inp.h(), weight.h(), nullptr, N, C, OC);
    gpu_->matmul_forward(out.d(), inp.d(), weight.d(), nullptr, N, C, OC);
    expect_close(out, kF32Tolerance, "matmul_forward without bias");

    auto gelu_out = output(N * OC), pre_gelu = output(N * OC);
    cpu_.matmul_gelu_forward(gelu_out.h(), pre_gelu.h(), inp.h(), weight.h(), bias.h(), N, C, OC);
    gpu_->matmul_gelu_forward(gelu_out.d(), pre_gelu.d(), inp.d(), weight.d(), bias.d(), N, C, OC);
    expect_close(pre_gelu, kF32Tolerance, "matmul_gelu_forward pre_gelu");
    expect_close(gelu_out, kF32Tolerance, "matmul_gelu_forward out");
  }
}

// dinp OVERWRITES; dweight and dbias ACCUMULATE onto random values; null dinp and dbias skip.
// 1e-5.
TEST_F(CudaBackendOps, MatmulBackward) {
  constexpr int64_t N = 37, C = 100, OC = 300;
  auto dout = random(N * OC, 41), inp = random(N * C, 42), weight = random(OC * C, 43, 0.1f);
  auto dinp = output(N * C), dweight = random(OC * C, 44), dbias = random(OC, 45);
  cpu_.matmul_backward(dinp.h(), dweight.h(), dbias.h(), dout.h(), inp.h(), weight.h(), N, C, OC);
  gpu_->matmul_backward(dinp.d(), dweight.d(), dbias.d(), dout.d(), inp.d(), weight.d(), N, C, OC);
  expect_close(dinp, kF32Tolerance, "dinp");
  expect_close(dweight, kF32Tolerance, "dweight");
  expect_close(dbias, kF32Tolerance, "dbias");

  cpu_.matmul_backward(nullptr, dweight.h(), nullptr, dout.h(), inp.h(), weight.h(), N, C, OC);
  gpu_->matmul_backward(nullptr, dweight.d(), nullptr, dout.d(), inp.d(), weight.d(), N, C, OC);
  expect_close(dweight, kF32Tolerance, "dweight, second accumulation (null dinp, dbias)");
  expect_close(dbias, kF32Tolerance, "dbias untouched by the second call");
}

// train.dtype: bf16 (set_bf16_matmuls on both backends): cuBLASLt's bf16 GEMMs against the CPU's
// reference (operands rounded to bf16, then its fp32 GEMM). The products are exact on both
// sides; tensor-core accumulation may truncate rather than round (tests/cuda/matmul_test.cu),
// about K/3 · 2^-23 at worst: 1.2e-5 at K = 300, so 1e-4. The CPU rounds in row blocks of 256,
// so N = 300 crosses one.
TEST_F(CudaBackendOps, Bf16MatmulsMatchTheCpuReference) {
  constexpr int64_t N = 300, C = 100, OC = 256;
  const Bf16Matmuls bf16 = bf16_matmuls();
  auto inp = random(N * C, 301), weight = random(OC * C, 302, 0.1f), bias = random(OC, 303);
  auto out = output(N * OC);
  cpu_.matmul_forward(out.h(), inp.h(), weight.h(), bias.h(), N, C, OC);
  gpu_->matmul_forward(out.d(), inp.d(), weight.d(), bias.d(), N, C, OC);
  constexpr double kBf16Tolerance = 1e-4;
  expect_close(out, kBf16Tolerance, "bf16 matmul_forward");

  auto gelu_out = output(N * OC), pre_gelu = output(N * OC);
  cpu_.matmul_gelu_forward(gelu_out.h(), pre_gelu.h(), inp.h(), weight.h(), bias.h(), N, C, OC);
  gpu_->matmul_gelu_forward(gelu_out.d(), pre_gelu.d(), inp.d(), weight.d(), bias.d(), N, C, OC);
  expect_close(pre_gelu, kBf16Tolerance, "bf16 matmul_gelu_forward pre_gelu");
  expect_close(gelu_out, kBf16Tolerance, "bf16 matmul_gelu_forward out");

  auto dout = random(N * OC, 304), dinp = output(N * C);
  auto dweight = random(OC * C, 305), dbias = random(OC, 306);
  cpu_.matmul_backward(dinp.h(), dweight.h(), dbias.h(), dout.h(), inp.h(), weight.h(), N, C, OC);
  gpu_->matmul_backward(dinp.d(), dweight.d(), dbias.d(), dout.d(), inp.d(), weight.d(), N, C, OC);
  expect_close(dinp, kBf16Tolerance, "bf16 dinp");
  expect_close(dweight, kBf16Tolerance, "bf16 dweight");
  expect_close(dbias, kBf16Tolerance, "bf16 dbias");
}

// Frozen with bf16 operands (generation in bf16), each weight is converted once and its copy kept:
// the same bits as the unfrozen bf16 product (the same cuBLASLt call on the same bf16 values),
// one copy of OC x C bf16 values per weight, a second weight its own, and dropped at the last
// unfreeze. Against the CPU's frozen bf16 (the rounded weight, packed): 1e-4.
TEST_F(CudaBackendOps, FrozenBf16WeightsAreConvertedOnce) {
  constexpr int64_t N = 5, C = 100, OC = 256;
  const Bf16Matmuls bf16 = bf16_matmuls();
  struct Unfreeze {
    CpuBackend& cpu;
    Backend& gpu;
    ~Unfreeze() {
      cpu.freeze_weights(false);
      gpu.freeze_weights(false);
    }
  } unfreeze{cpu_, *gpu_};
  auto inp = random(N * C, 311), weight = random(OC * C, 312, 0.1f), bias = random(OC, 313);
  auto weight2 = random(OC * C, 314, 0.1f);
  auto unfrozen = output(N * OC), frozen = output(N * OC), again = output(N * OC);
  gpu_->matmul_forward(unfrozen.d(), inp.d(), weight.d(), bias.d(), N, C, OC);
  cpu_.freeze_weights(true);
  gpu_->freeze_weights(true);
  EXPECT_EQ(gpu_->frozen_copy_bytes(), 0u) << "nothing is kept before a weight is used";
  gpu_->matmul_forward(frozen.d(), inp.d(), weight.d(), bias.d(), N, C, OC);
  gpu_->matmul_forward(again.d(), inp.d(), weight.d(), bias.d(), N, C, OC);
  EXPECT_EQ(fetch(frozen), fetch(unfrozen)) << "frozen bf16 vs unfrozen bf16";
  EXPECT_EQ(fetch(again), fetch(unfrozen)) << "the kept copy, second use";
  EXPECT_EQ(gpu_->frozen_copy_bytes(), static_cast<size_t>(OC * C) * 2);
  cpu_.matmul_forward(frozen.h(), inp.h(), weight.h(), bias.h(), N, C, OC);
  expect_close(frozen, 1e-4, "frozen bf16 matmul_forward against the CPU's");

  auto second = output(N * OC);
  cpu_.matmul_forward(second.h(), inp.h(), weight2.h(), bias.h(), N, C, OC);
  gpu_->matmul_forward(second.d(), inp.d(), weight2.d(), bias.d(), N, C, OC);
  expect_close(second, 1e-4, "a second frozen weight");
  EXPECT_EQ(gpu_->frozen_copy_bytes(), static_cast<size_t>(OC * C) * 2 * 2);
  gpu_->freeze_weights(false);
  EXPECT_EQ(gpu_->frozen_copy_bytes(), 0u);
}

// ---- Normalisation and activations --------------------------------------------------------------

// Forward: out, mean, rstd OVERWRITTEN. Backward (on the CPU's saved mean and rstd, so it is
// compared alone): dinp, dweight, dbias ACCUMULATE onto random values. 1e-5.
TEST_F(CudaBackendOps, LayernormForwardAndBackward) {
  constexpr int64_t N = 37, C = 300;
  auto inp = random(N * C, 51, 2.0f), weight = random(C, 52), bias = random(C, 53);
  auto out = output(N * C), mean = output(N), rstd = output(N);
  cpu_.layernorm_forward(out.h(), mean.h(), rstd.h(), inp.h(), weight.h(), bias.h(), N, C);
  gpu_->layernorm_forward(out.d(), mean.d(), rstd.d(), inp.d(), weight.d(), bias.d(), N, C);
  expect_close(out, kF32Tolerance, "out");
  expect_close(mean, kF32Tolerance, "mean");
  expect_close(rstd, kF32Tolerance, "rstd");

  auto saved_mean = twin(mean.host), saved_rstd = twin(rstd.host);
  auto dout = random(N * C, 54), dinp = random(N * C, 55), dweight = random(C, 56),
       dbias = random(C, 57);
  cpu_.layernorm_backward(dinp.h(), dweight.h(), dbias.h(), dout.h(), inp.h(), weight.h(),
                          saved_mean.h(), saved_rstd.h(), N, C);
  gpu_->layernorm_backward(dinp.d(), dweight.d(), dbias.d(), dout.d(), inp.d(), weight.d(),
                           saved_mean.d(), saved_rstd.d(), N, C);
  expect_close(dinp, kF32Tolerance, "dinp");
  expect_close(dweight, kF32Tolerance, "dweight");
  expect_close(dbias, kF32Tolerance, "dbias");
}

// tanh-form GELU; dinp OVERWRITTEN, also in place over dout. 1e-5 (tanhf against libm).
TEST_F(CudaBackendOps, GeluForwardAndBackward) {
  constexpr int64_t n = 100003;
  auto inp = random(n, 61, 2.0f), out = output(n);
  cpu_.gelu_forward(out.h(), inp.h(), n);
  gpu_->gelu_forward(out.d(), inp.d(), n);
  expect_close(out, kF32Tolerance, "gelu_forward");

  auto dout = random(n, 62), dinp = output(n);
  cpu_.gelu_backward(dinp.h(), inp.h(), dout.h(), n);
  gpu_->gelu_backward(dinp.d(), inp.d(), dout.d(), n);
  expect_close(dinp, kF32Tolerance, "gelu_backward");
  cpu_.gelu_backward(dout.h(), inp.h(), dout.h(), n);
  gpu_->gelu_backward(dout.d(), inp.d(), dout.d(), n);
  expect_close(dout, kF32Tolerance, "gelu_backward in place");
}

// ---- Element-wise -------------------------------------------------------------------------------

// One IEEE operation per element on both sides: bit for bit.
TEST_F(CudaBackendOps, ElementWiseOpsAreBitExact) {
  constexpr int64_t N = 301, C = 333, n = N * C;
  auto a = random(n, 71), b = random(n, 72), out = output(n);
  cpu_.residual_forward(out.h(), a.h(), b.h(), n);
  gpu_->residual_forward(out.d(), a.d(), b.d(), n);
  expect_equal(out, "residual_forward");

  cpu_.add_inplace(a.h(), b.h(), n);
  gpu_->add_inplace(a.d(), b.d(), n);
  expect_equal(a, "add_inplace");

  cpu_.scale_inplace(a.h(), 0.37f, n);
  gpu_->scale_inplace(a.d(), 0.37f, n);
  expect_equal(a, "scale_inplace");

  auto bias = random(C, 73);
  cpu_.add_bias(a.h(), bias.h(), N, C);
  gpu_->add_bias(a.d(), bias.d(), N, C);
  expect_equal(a, "add_bias");
}

// Exact double squares summed in different orders: 1e-10 relative; n = 0 gives 0.
TEST_F(CudaBackendOps, SumSquaresInDouble) {
  for (const int64_t n : {int64_t{0}, int64_t{1}, int64_t{100003}, (int64_t{1} << 22) + 37}) {
    SCOPED_TRACE(::testing::Message() << "n " << n);
    auto x = random(n, 81);
    const double want = cpu_.sum_squares(x.h(), n);
    const double got = gpu_->sum_squares(x.d(), n);
    EXPECT_LE(std::fabs(got - want), kDoubleSumTolerance * want) << got << " vs " << want;
    EXPECT_EQ(gpu_->sum_squares(x.d(), n), got);  // deterministic
  }
}

// ---- Attention (training) -----------------------------------------------------------------------

// Odd T, HS = 16. Backward runs on the CPU's saved softmax statistics, so it is compared alone;
// each backend gets its own workspace size. 1e-5.
TEST_F(CudaBackendOps, AttentionForwardAndBackward) {
  constexpr int64_t B = 2, T = 37, C = 64, NH = 4;
  auto qkv = random(B * T * 3 * C, 91), out = output(B * T * C), stats = output(B * NH * T * 2);
  auto cpu_ws = std::vector<float>(cpu_.attention_workspace_size(B, T, C, NH));
  auto gpu_ws = gpu_->zeros({gpu_->attention_workspace_size(B, T, C, NH)}, core::DType::kF32);
  cpu_.attention_forward(out.h(), stats.h(), cpu_ws.data(), qkv.h(), B, T, C, NH);
  gpu_->attention_forward(out.d(), stats.d(), gpu_ws.f32(), qkv.d(), B, T, C, NH);
  expect_close(out, kF32Tolerance, "out");
  expect_close(stats, kF32Tolerance, "stats");

  auto saved_stats = twin(stats.host);
  auto dout = random(B * T * C, 92), dqkv = output(B * T * 3 * C);
  cpu_.attention_backward(dqkv.h(), cpu_ws.data(), dout.h(), qkv.h(), saved_stats.h(), B, T, C, NH);
  gpu_->attention_backward(dqkv.d(), gpu_ws.f32(), dout.d(), qkv.d(), saved_stats.d(), B, T, C, NH);
  expect_close(dqkv, kF32Tolerance, "dqkv");
}

// bf16 activations (train.dtype: bf16): the ops on core::Act arguments through both backends. The
// conversions and the element-wise ops are bit for bit (the same fp32 values rounded the same
// way). Where the fp32 results differ in their last bits (GEMMs, layernorm, attention) a value
// may round to the neighbouring bf16, 2^-8 relative, so those compare within 4e-3; the fp32
// outputs (statistics, gradients) at the fp32 bar, or the bf16 GEMMs' where bf16 operands are on.
// CUDA's native forms run here: the GEMMs on bf16 inputs, layernorm_forward_bf16,
// residual_forward_bf16 and the fused attention on bf16 qkv.
TEST_F(CudaBackendOps, Bf16ActivationOpsMatchTheCpu) {
  // NH 2: head size 32, so attention takes the fused kernels' bf16 form.
  constexpr int64_t B = 2, T = 37, C = 64, NH = 2, N = B * T, OC = 3 * C;
  constexpr double kBf16Tolerance = 4e-3, kBf16GemmTolerance = 1e-4;
  using core::Act;
  using core::ConstAct;
  auto f = random(N * C, 401), back = output(N * C);
  auto bits = output_bf16(N * C);
  cpu_.f32_to_bf16(bits.h(), f.h(), N * C);
  gpu_->f32_to_bf16(bits.d(), f.d(), N * C);
  expect_equal(bits, "f32_to_bf16");
  cpu_.bf16_to_f32(back.h(), bits.h(), N * C);
  gpu_->bf16_to_f32(back.d(), bits.d(), N * C);
  expect_equal(back, "bf16_to_f32");

  auto a = random_bf16(N * C, 402), b = random_bf16(N * C, 403), sum = output_bf16(N * C);
  cpu_.residual_forward(Act::bf16(sum.h()), ConstAct::bf16(a.h()), ConstAct::bf16(b.h()), N * C);
  gpu_->residual_forward(Act::bf16(sum.d()), ConstAct::bf16(a.d()), ConstAct::bf16(b.d()), N * C);
  expect_equal(sum, "bf16 residual_forward");
  auto bias = random(C, 404);
  cpu_.add_bias(Act::bf16(sum.h()), bias.h(), N, C);
  gpu_->add_bias(Act::bf16(sum.d()), bias.d(), N, C);
  expect_equal(sum, "bf16 add_bias");

  auto lw = random(C, 405), lb = random(C, 406);
  auto ln = output_bf16(N * C);
  auto mean = output(N), rstd = output(N);
  cpu_.layernorm_forward(Act::bf16(ln.h()), mean.h(), rstd.h(), ConstAct::bf16(a.h()), lw.h(),
                         lb.h(), N, C);
  gpu_->layernorm_forward(Act::bf16(ln.d()), mean.d(), rstd.d(), ConstAct::bf16(a.d()), lw.d(),
                          lb.d(), N, C);
  expect_close_bf16(ln, kBf16Tolerance, "bf16 layernorm_forward");
  expect_close(rstd, kF32Tolerance, "rstd of bf16 inputs");
  auto dln = random(N * C, 407), dinp = random(N * C, 408), dlw = random(C, 409),
       dlb = random(C, 410);
  auto saved_mean = twin(mean.host), saved_rstd = twin(rstd.host);
  cpu_.layernorm_backward(dinp.h(), dlw.h(), dlb.h(), dln.h(), ConstAct::bf16(a.h()), lw.h(),
                          saved_mean.h(), saved_rstd.h(), N, C);
  gpu_->layernorm_backward(dinp.d(), dlw.d(), dlb.d(), dln.d(), ConstAct::bf16(a.d()), lw.d(),
                           saved_mean.d(), saved_rstd.d(), N, C);
  expect_close(dinp, kF32Tolerance, "layernorm dinp from bf16 inputs");
  expect_close(dlw, kF32Tolerance, "layernorm dweight from bf16 inputs");

  const Bf16Matmuls bf16 = bf16_matmuls();
  auto w = random(OC * C, 411, 0.1f), wb = random(OC, 412);
  auto qkv = output_bf16(N * OC);
  cpu_.matmul_forward(Act::bf16(qkv.h()), ConstAct::bf16(a.h()), w.h(), wb.h(), N, C, OC);
  gpu_->matmul_forward(Act::bf16(qkv.d()), ConstAct::bf16(a.d()), w.d(), wb.d(), N, C, OC);
  expect_close_bf16(qkv, kBf16Tolerance, "bf16 matmul_forward");
  auto logits = output(N * OC);  // an fp32 output from a bf16 input: the LM head
  cpu_.matmul_forward(Act(logits.h()), ConstAct::bf16(a.h()), w.h(), nullptr, N, C, OC);
  gpu_->matmul_forward(Act(logits.d()), ConstAct::bf16(a.d()), w.d(), nullptr, N, C, OC);
  expect_close(logits, kBf16GemmTolerance, "fp32 logits of bf16 inputs");
  auto gelu = output_bf16(N * OC), pre = output_bf16(N * OC);
  cpu_.matmul_gelu_forward(Act::bf16(gelu.h()), Act::bf16(pre.h()), ConstAct::bf16(a.h()), w.h(),
                           wb.h(), N, C, OC);
  gpu_->matmul_gelu_forward(Act::bf16(gelu.d()), Act::bf16(pre.d()), ConstAct::bf16(a.d()), w.d(),
                            wb.d(), N, C, OC);
  expect_close_bf16(pre, kBf16Tolerance, "bf16 pre-GELU");
  expect_close_bf16(gelu, kBf16Tolerance, "bf16 GELU");
  auto dout = random(N * OC, 413), dx = output(N * C), dw = random(OC * C, 414),
       db = random(OC, 415);
  cpu_.matmul_backward(dx.h(), dw.h(), db.h(), dout.h(), ConstAct::bf16(a.h()), w.h(), N, C, OC);
  gpu_->matmul_backward(dx.d(), dw.d(), db.d(), dout.d(), ConstAct::bf16(a.d()), w.d(), N, C, OC);
  expect_close(dx, kBf16GemmTolerance, "matmul dinp from bf16 inputs");
  expect_close(dw, kBf16GemmTolerance, "matmul dweight from bf16 inputs");
  auto dgelu = output(N * OC);
  cpu_.gelu_backward(dgelu.h(), ConstAct::bf16(pre.h()), dout.h(), N * OC);
  gpu_->gelu_backward(dgelu.d(), ConstAct::bf16(pre.d()), dout.d(), N * OC);
  expect_close(dgelu, kBf16Tolerance, "gelu_backward from bf16 pre-GELU");

  auto att = output_bf16(N * C);
  auto stats = output(B * NH * T * 2);
  auto cpu_ws = std::vector<float>(cpu_.attention_workspace_size(B, T, C, NH));
  auto gpu_ws = gpu_->zeros({gpu_->attention_workspace_size(B, T, C, NH)}, core::DType::kF32);
  auto q = random_bf16(N * OC, 416);
  cpu_.attention_forward(Act::bf16(att.h()), stats.h(), cpu_ws.data(), ConstAct::bf16(q.h()), B, T,
                         C, NH);
  gpu_->attention_forward(Act::bf16(att.d()), stats.d(), gpu_ws.f32(), ConstAct::bf16(q.d()), B, T,
                          C, NH);
  expect_close_bf16(att, kBf16Tolerance, "bf16 attention_forward");
  expect_close(stats, kF32Tolerance, "attention statistics of bf16 inputs");
  auto saved_stats = twin(stats.host), datt = random(N * C, 417), dqkv = output(N * OC);
  cpu_.attention_backward(dqkv.h(), cpu_ws.data(), datt.h(), ConstAct::bf16(q.h()), saved_stats.h(),
                          B, T, C, NH);
  gpu_->attention_backward(dqkv.d(), gpu_ws.f32(), datt.d(), ConstAct::bf16(q.d()), saved_stats.d(),
                           B, T, C, NH);
  expect_close(dqkv, kF32Tolerance, "attention dqkv from bf16 inputs");
}

// HS = 32: the fused (flash) kernels by default, against the CPU and against a CudaBackend built
// with the plain kernels; the fused workspace is one float per query row, the plain one two
// (T, T) tensors. 1e-5.
TEST_F(CudaBackendOps, FusedAttentionThroughTheBackend) {
  constexpr int64_t B = 2, T = 50, C = 96, NH = 3;
  // Built here rather than by make_cuda_backend, whose choice TESSERA_CUDA_ATTENTION can change.
  CudaBackend fused(CudaBackend::Attention::kFused), plain(CudaBackend::Attention::kPlain);
  EXPECT_EQ(fused.attention_workspace_size(B, T, C, NH), B * NH * T);
  EXPECT_EQ(plain.attention_workspace_size(B, T, C, NH), 2 * B * NH * T * T);
  EXPECT_EQ(fused.attention_workspace_size(B, T, 48, NH), 2 * B * NH * T * T) << "HS 16: plain";
  auto qkv = random(B * T * 3 * C, 93), out = output(B * T * C), stats = output(B * NH * T * 2);
  auto cpu_ws = std::vector<float>(cpu_.attention_workspace_size(B, T, C, NH));
  auto gpu_ws = fused.zeros({fused.attention_workspace_size(B, T, C, NH)}, core::DType::kF32);
  cpu_.attention_forward(out.h(), stats.h(), cpu_ws.data(), qkv.h(), B, T, C, NH);
  fused.attention_forward(out.d(), stats.d(), gpu_ws.f32(), qkv.d(), B, T, C, NH);
  fused.synchronize();
  expect_close(out, kF32Tolerance, "fused out");
  expect_close(stats, kF32Tolerance, "fused stats");
  auto saved_stats = twin(stats.host);
  auto dout = random(B * T * C, 94), dqkv = output(B * T * 3 * C);
  cpu_.attention_backward(dqkv.h(), cpu_ws.data(), dout.h(), qkv.h(), saved_stats.h(), B, T, C, NH);
  fused.attention_backward(dqkv.d(), gpu_ws.f32(), dout.d(), qkv.d(), saved_stats.d(), B, T, C, NH);
  fused.synchronize();
  expect_close(dqkv, kF32Tolerance, "fused dqkv");
  // The plain kernels through their own backend, on the same saved statistics.
  auto plain_ws = plain.zeros({plain.attention_workspace_size(B, T, C, NH)}, core::DType::kF32);
  auto plain_dqkv = output(B * T * 3 * C);
  plain.attention_backward(plain_dqkv.d(), plain_ws.f32(), dout.d(), qkv.d(), saved_stats.d(), B, T,
                           C, NH);
  plain.synchronize();
  EXPECT_LE(tt::rel_error(fetch(plain_dqkv), fetch(dqkv)), kF32Tolerance) << "plain vs fused";
}

// ---- Attention over a KV cache ------------------------------------------------------------------

// Paged caches (n_blocks, block_size, C) start at zero on both sides; the block table gives each
// slot its blocks in a scrambled order (the last block of the pool first), so the kernels' paging
// is exercised, not only the contiguous case. kv_append copies: bit for bit.
// attention_decode: 1e-5 (dot products, max-shifted exponentials and their sum in another order;
// past 1024 positions the CUDA kernel rescales tile by tile).
class CudaBackendDecode : public CudaBackendOps {
 protected:
  struct Step {
    Twin<float> qkv;
    Twin<int32_t> slots, positions;
    Twin<float> out;
  };

  void make_cache(int64_t n_slots, int64_t maxT, int64_t C, int64_t block_size = 16) {
    C_ = C;
    const int64_t blocks_per_slot = (maxT + block_size - 1) / block_size;
    const int64_t n_blocks = n_slots * blocks_per_slot;
    std::vector<int32_t> table(n_blocks);
    for (int64_t b = 0; b < n_blocks; ++b) table[b] = static_cast<int32_t>(n_blocks - 1 - b);
    table_ = twin(std::move(table));
    cpu_pages_ = backends::KvPages{table_.h(), blocks_per_slot, block_size};
    gpu_pages_ = backends::KvPages{table_.d(), blocks_per_slot, block_size};
    k_cache_ = twin(std::vector<float>(n_blocks * block_size * C, 0.0f));
    v_cache_ = twin(std::vector<float>(n_blocks * block_size * C, 0.0f));
  }

  // Rows (slots[i], positions[i]) with fresh random qkv: kv_append, then attention_decode of the
  // same rows, on both backends; compares the caches and out.
  Step append_and_attend(std::vector<int32_t> slots, std::vector<int32_t> positions, int64_t NH,
                         uint32_t seed) {
    const auto N = static_cast<int64_t>(slots.size());
    Step s{random(N * 3 * C_, seed), twin(std::move(slots)), twin(std::move(positions)),
           output(N * C_)};
    cpu_.kv_append(k_cache_.h(), v_cache_.h(), s.qkv.h(), cpu_pages_, s.slots.h(), s.positions.h(),
                   N, C_);
    gpu_->kv_append(k_cache_.d(), v_cache_.d(), s.qkv.d(), gpu_pages_, s.slots.d(), s.positions.d(),
                    N, C_);
    expect_equal(k_cache_, "k_cache after kv_append");
    expect_equal(v_cache_, "v_cache after kv_append");
    cpu_.attention_decode(s.out.h(), s.qkv.h(), k_cache_.h(), v_cache_.h(), cpu_pages_, s.slots.h(),
                          s.positions.h(), N, C_, NH);
    gpu_->attention_decode(s.out.d(), s.qkv.d(), k_cache_.d(), v_cache_.d(), gpu_pages_,
                           s.slots.d(), s.positions.d(), N, C_, NH);
    expect_close(s.out, kF32Tolerance, "attention_decode out");
    return s;
  }

  // Batch invariance on the device: each row of `s` decoded alone gives the bits it got in the
  // batch (attention_decode only reads the cache, which is unchanged since).
  void expect_rows_batch_invariant(const Step& s, int64_t NH) {
    const std::vector<float> batched = fetch(s.out);
    const auto N = static_cast<int64_t>(s.slots.host.size());
    auto alone = output(C_);
    for (int64_t i = 0; i < N; ++i) {
      gpu_->attention_decode(alone.d(), s.qkv.d() + i * 3 * C_, k_cache_.d(), v_cache_.d(),
                             gpu_pages_, s.slots.d() + i, s.positions.d() + i, 1, C_, NH);
      const std::vector<float> row(batched.begin() + i * C_, batched.begin() + (i + 1) * C_);
      EXPECT_EQ(fetch(alone), row) << "row " << i << " decoded alone";
    }
  }

  int64_t C_ = 0;
  Twin<float> k_cache_, v_cache_;
  Twin<int32_t> table_;
  backends::KvPages cpu_pages_, gpu_pages_;
};

// Prefill chunks (rows of one slot in increasing positions, and two slots in one call), then
// decode steps of three rows of different slots at different positions. HS = 16.
TEST_F(CudaBackendDecode, RowsOfDifferentSlotsAndPrefillChunks) {
  constexpr int64_t n_slots = 3, maxT = 48, C = 64, NH = 4;
  make_cache(n_slots, maxT, C);
  std::vector<int32_t> slots, positions;
  for (int32_t t = 0; t < 20; ++t) slots.push_back(1), positions.push_back(t);
  append_and_attend(slots, positions, NH, 101);  // a chunk of one slot's prompt
  slots.clear();
  positions.clear();
  for (int32_t t = 0; t < 10; ++t) slots.push_back(0), positions.push_back(t);
  for (int32_t t = 0; t < 30; ++t) slots.push_back(2), positions.push_back(t);
  append_and_attend(slots, positions, NH, 102);  // two slots' chunks in one call

  const Step step = append_and_attend({2, 0, 1}, {30, 10, 20}, NH, 103);
  expect_rows_batch_invariant(step, NH);
  const Step next = append_and_attend({1, 2, 0}, {21, 31, 11}, NH, 104);  // rows in another order
  expect_rows_batch_invariant(next, NH);
}

// Contexts past one 1024-position tile of the CUDA kernel (its online-softmax rescaling): slot 1
// prefilled to 2400 positions in chunks of 800, then a decode row there beside a first row of
// slot 0. HS = 32.
TEST_F(CudaBackendDecode, ContextsLongerThanOneTile) {
  constexpr int64_t n_slots = 2, maxT = 2600, C = 64, NH = 2;
  make_cache(n_slots, maxT, C);
  for (int32_t t0 = 0; t0 < 2400; t0 += 800) {
    std::vector<int32_t> slots(800, 1), positions(800);
    for (int32_t t = 0; t < 800; ++t) positions[t] = t0 + t;
    append_and_attend(slots, positions, NH, 111 + t0);
  }
  const Step step = append_and_attend({1, 0}, {2400, 0}, NH, 115);
  expect_rows_batch_invariant(step, NH);
}

// ---- Embeddings ---------------------------------------------------------------------------------

// Copies, and sums in the CPU's order (tests/cuda/embedding_test.cpp): bit for bit. Tokens fall
// below, inside and above the shard [50, 100), with repeats.
TEST_F(CudaBackendOps, EmbeddingsAreBitExact) {
  constexpr int64_t N = 37, C = 100, vocab_start = 50, V_local = 50;
  auto tokens = twin(random_ints(N, 0, 149, 121));
  auto wte = random(V_local * C, 122), out = output(N * C);
  cpu_.embedding_forward(out.h(), tokens.h(), wte.h(), N, C, vocab_start, V_local);
  gpu_->embedding_forward(out.d(), tokens.d(), wte.d(), N, C, vocab_start, V_local);
  expect_equal(out, "embedding_forward");

  auto dout = random(N * C, 123), dwte = random(V_local * C, 124);
  cpu_.embedding_backward(dwte.h(), dout.h(), tokens.h(), N, C, vocab_start, V_local);
  gpu_->embedding_backward(dwte.d(), dout.d(), tokens.d(), N, C, vocab_start, V_local);
  expect_equal(dwte, "embedding_backward");

  constexpr int64_t B = 3, T = 37, maxT = 48;
  auto wpe = random(maxT * C, 125), x = random(B * T * C, 126);
  cpu_.positional_forward(x.h(), wpe.h(), B, T, C);
  gpu_->positional_forward(x.d(), wpe.d(), B, T, C);
  expect_equal(x, "positional_forward");

  auto dx = random(B * T * C, 127), dwpe = random(maxT * C, 128);
  cpu_.positional_backward(dwpe.h(), dx.h(), B, T, C);
  gpu_->positional_backward(dwpe.d(), dx.d(), B, T, C);
  expect_equal(dwpe, "positional_backward");

  auto positions = twin(random_ints(N, 0, maxT - 1, 129));
  auto rows = random(N * C, 130);
  cpu_.positional_rows(rows.h(), wpe.h(), positions.h(), N, C);
  gpu_->positional_rows(rows.d(), wpe.d(), positions.d(), N, C);
  expect_equal(rows, "positional_rows");
}

// ---- Cross-entropy ------------------------------------------------------------------------------

// A middle vocabulary shard [100, 200) of 100 real columns in rows of 104 (padding 1e3, never
// read); targets below, inside and above it, every fifth row ignored. Each pass takes the CPU's
// outputs of the passes before it, so it is compared alone. Maxima and the target logit are
// copies: bit for bit; sums of exponentials, losses and dlogits: 1e-5.
TEST_F(CudaBackendOps, CrossEntropyPasses) {
  constexpr int64_t N = 37, n_cols = 100, ld = 104, vocab_start = 100;
  std::vector<float> logits_host = tt::random_floats(N * ld, 131, 3.0f);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t v = n_cols; v < ld; ++v) logits_host[n * ld + v] = 1e3f;
  }
  std::vector<int32_t> targets_host = random_ints(N, 0, 299, 132);
  for (int64_t n = 3; n < N; n += 5) targets_host[n] = -1;
  auto logits = twin(logits_host);
  auto targets = twin(targets_host);

  auto row_max = output(N);
  cpu_.xent_row_max(row_max.h(), logits.h(), N, n_cols, ld);
  gpu_->xent_row_max(row_max.d(), logits.d(), N, n_cols, ld);
  expect_equal(row_max, "xent_row_max");

  auto max_in = twin(row_max.host);
  auto sumexp = output(N), target_logit = output(N);
  cpu_.xent_row_sumexp_target(sumexp.h(), target_logit.h(), logits.h(), targets.h(), max_in.h(), N,
                              n_cols, ld, vocab_start);
  gpu_->xent_row_sumexp_target(sumexp.d(), target_logit.d(), logits.d(), targets.d(), max_in.d(), N,
                               n_cols, ld, vocab_start);
  expect_close(sumexp, kF32Tolerance, "xent_row_sumexp_target sumexp");
  expect_equal(target_logit, "xent_row_sumexp_target target_logit");

  auto sumexp_in = twin(sumexp.host), target_in = twin(target_logit.host);
  auto losses = output(N);
  cpu_.xent_loss(losses.h(), max_in.h(), sumexp_in.h(), target_in.h(), targets.h(), N);
  gpu_->xent_loss(losses.d(), max_in.d(), sumexp_in.d(), target_in.d(), targets.d(), N);
  expect_close(losses, kF32Tolerance, "xent_loss");

  auto dlosses = random(N, 133), dlogits = output(N * ld);
  cpu_.xent_backward(dlogits.h(), logits.h(), targets.h(), max_in.h(), sumexp_in.h(), dlosses.h(),
                     N, n_cols, ld, vocab_start);
  gpu_->xent_backward(dlogits.d(), logits.d(), targets.d(), max_in.d(), sumexp_in.d(), dlosses.d(),
                      N, n_cols, ld, vocab_start);
  expect_close(dlogits, kF32Tolerance, "xent_backward (padding columns and ignored rows 0)");
}

// Σ losses over targets >= 0 in double (rows in another order on the device: 1e-10) and the
// count of such rows (exact); N = 0 gives 0 and 0.
TEST_F(CudaBackendOps, SumLossesSkipsIgnoredRows) {
  for (const int64_t N : {int64_t{0}, int64_t{37}, int64_t{5003}}) {
    SCOPED_TRACE(::testing::Message() << "N " << N);
    std::vector<float> losses_host = tt::random_floats(N, 141);
    for (float& l : losses_host) l = std::fabs(l) + 0.5f;
    std::vector<int32_t> targets_host = random_ints(N, -1, 5, 142);  // about 1 in 7 ignored
    auto losses = twin(losses_host);
    auto targets = twin(targets_host);
    int64_t want_count = -1, got_count = -1;
    const double want = cpu_.sum_losses(losses.h(), targets.h(), N, &want_count);
    const double got = gpu_->sum_losses(losses.d(), targets.d(), N, &got_count);
    EXPECT_EQ(got_count, want_count);
    EXPECT_LE(std::fabs(got - want), kDoubleSumTolerance * want) << got << " vs " << want;
    EXPECT_EQ(gpu_->sum_losses(losses.d(), targets.d(), N, nullptr), got);  // count may be null
  }
}

// ---- Optimizer ----------------------------------------------------------------------------------

// Two steps with fresh gradients, with and without weight decay, from nonzero moments. 1e-6.
TEST_F(CudaBackendOps, AdamWUpdate) {
  constexpr int64_t n = 100003;
  for (const bool decay : {true, false}) {
    SCOPED_TRACE(::testing::Message() << "decay " << decay);
    auto param = random(n, 151), m = random(n, 152, 0.1f);
    std::vector<float> v_host = tt::random_floats(n, 153, 0.1f);
    for (float& x : v_host) x *= x;  // a second moment is >= 0
    auto v = twin(v_host);
    for (int64_t step = 1; step <= 2; ++step) {
      const AdamWHyper h{6e-4f * static_cast<float>(step), 0.9f, 0.95f, 1e-8f, 0.1f, step};
      auto grad = random(n, 154 + static_cast<uint32_t>(step));
      cpu_.adamw_update(param.h(), grad.h(), m.h(), v.h(), n, h, decay);
      gpu_->adamw_update(param.d(), grad.d(), m.d(), v.d(), n, h, decay);
    }
    expect_close(param, kAdamWTolerance, "param");
    expect_close(m, kAdamWTolerance, "m");
    expect_close(v, kAdamWTolerance, "v");
  }
}

}  // namespace
}  // namespace tessera::backends
