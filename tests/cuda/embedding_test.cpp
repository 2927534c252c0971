// CUDA token and position embeddings against their CPU twin (backends/cpu/embedding.h). Forward
// copies rows, and the backward kernels add each element's contributions in the CPU's order, so
// every output must equal the CPU's bit for bit (tolerance 0). Tokens fall below, inside and above
// the rank's vocabulary shard, with repeats.
#include "backends/cuda/embedding.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "backends/cpu/embedding.h"
#include "cuda_test_util.h"

namespace tessera::backends::cuda {
namespace {

namespace tt = tessera::testing;

struct Case {
  int64_t N, C, vocab_start, V_local, V;  // tokens are drawn from [0, V)
};
// A middle shard of a 150-token vocabulary (a third of the tokens in range, many repeats); a
// GPT-2 width with the first shard; a long sequence with few distinct tokens (heavy repeats).
constexpr Case kCases[] = {
    {37, 100, 50, 50, 150}, {256, 768, 0, 1000, 2000}, {4096, 64, 8, 16, 40}};

std::vector<int32_t> random_tokens(int64_t N, int64_t V, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(V - 1));
  std::vector<int32_t> t(N);
  for (auto& v : t) v = dist(gen);
  return t;
}

TEST(CudaEmbedding, ForwardEqualsTheCpuTwin) {
  for (const auto& k : kCases) {
    SCOPED_TRACE(::testing::Message() << "N " << k.N << " C " << k.C << " start " << k.vocab_start);
    const auto tokens = random_tokens(k.N, k.V, 901);
    const auto wte = tt::random_floats(k.V_local * k.C, 902);
    tt::DeviceArray<int32_t> d_tokens(tokens);
    tt::DeviceArray<float> d_wte(wte), d_out(k.N * k.C);
    d_out.poison();  // out-of-shard rows must be written as zeros
    embedding_forward(d_out.get(), d_tokens.get(), d_wte.get(), k.N, k.C, k.vocab_start, k.V_local,
                      nullptr);
    std::vector<float> ref(k.N * k.C);
    cpu::embedding_forward(ref.data(), tokens.data(), wte.data(), k.N, k.C, k.vocab_start,
                           k.V_local);
    EXPECT_EQ(d_out.download(), ref);
  }
}

TEST(CudaEmbedding, BackwardAccumulatesAsTheCpuTwinBitForBit) {
  for (const auto& k : kCases) {
    SCOPED_TRACE(::testing::Message() << "N " << k.N << " C " << k.C << " start " << k.vocab_start);
    const auto tokens = random_tokens(k.N, k.V, 903);
    const auto dout = tt::random_floats(k.N * k.C, 904);
    auto dwte = tt::random_floats(k.V_local * k.C, 905);  // nonzero: backward accumulates
    tt::DeviceArray<int32_t> d_tokens(tokens);
    tt::DeviceArray<float> d_dout(dout), d_dwte(dwte);
    embedding_backward(d_dwte.get(), d_dout.get(), d_tokens.get(), k.N, k.C, k.vocab_start,
                       k.V_local, nullptr);
    const auto before = dwte;
    cpu::embedding_backward(dwte.data(), dout.data(), tokens.data(), k.N, k.C, k.vocab_start,
                            k.V_local);
    ASSERT_NE(dwte, before);  // some tokens were in range
    EXPECT_EQ(d_dwte.download(), dwte);
  }
}

TEST(CudaEmbedding, PositionalForwardAccumulatesAsTheCpuTwin) {
  struct Shape {
    int64_t B, T, C;
  };
  for (const auto [B, T, C] : {Shape{3, 37, 100}, Shape{4, 64, 768}, Shape{1, 1, 1}}) {
    SCOPED_TRACE(::testing::Message() << "B " << B << " T " << T << " C " << C);
    const int64_t maxT = T + 13;
    const auto wpe = tt::random_floats(maxT * C, 906);
    auto out = tt::random_floats(B * T * C, 907);  // the token embedding already there
    tt::DeviceArray<float> d_wpe(wpe), d_out(out);
    positional_forward(d_out.get(), d_wpe.get(), B, T, C, nullptr);
    cpu::positional_forward(out.data(), wpe.data(), B, T, C);
    EXPECT_EQ(d_out.download(), out);
  }
}

TEST(CudaEmbedding, PositionalBackwardAccumulatesAndLeavesLaterRows) {
  struct Shape {
    int64_t B, T, C;
  };
  for (const auto [B, T, C] : {Shape{3, 37, 100}, Shape{8, 64, 768}, Shape{1, 1, 1}}) {
    SCOPED_TRACE(::testing::Message() << "B " << B << " T " << T << " C " << C);
    const int64_t maxT = T + 13;
    const auto dout = tt::random_floats(B * T * C, 908);
    auto dwpe = tt::random_floats(maxT * C, 909);  // nonzero: backward accumulates
    tt::DeviceArray<float> d_dout(dout), d_dwpe(dwpe);
    positional_backward(d_dwpe.get(), d_dout.get(), B, T, C, nullptr);
    const auto before = dwpe;
    cpu::positional_backward(dwpe.data(), dout.data(), B, T, C);
    const auto got = d_dwpe.download();
    EXPECT_EQ(got, dwpe);
    // Rows t >= T are untouched.
    EXPECT_EQ(std::vector<float>(got.begin() + T * C, got.end()),
              std::vector<float>(before.begin() + T * C, before.end()));
  }
}

}  // namespace
}  // namespace tessera::backends::cuda
