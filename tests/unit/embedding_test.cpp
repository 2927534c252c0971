// Token and position embeddings: lookups on a vocab shard (out-of-range tokens give zero rows and
// no gradient), gradients against central differences (double), accumulate/overwrite semantics,
// shards summing to the unsharded result, float against double.
#include "backends/cpu/embedding.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "grad_check.h"

namespace tessera::backends::cpu {
namespace {

namespace tt = tessera::testing;

// Tokens of a vocabulary of 12 over N = 9 positions, with repeats (scatter must add them).
const std::vector<int32_t> kTokens = {3, 7, 3, 11, 0, 5, 7, 7, 8};
constexpr int64_t kEmbVocab = 12;

TEST(Embedding, ForwardLooksUpRowsInShardAndZerosOthers) {
  const int64_t N = static_cast<int64_t>(kTokens.size()), C = 5;
  const int64_t vocab_start = 4, V_local = 4;  // this rank holds tokens 4..7
  auto wte_local = tt::random_vector(V_local * C, 51);
  std::vector<double> out(N * C, 3.0);  // garbage: forward overwrites
  embedding_forward(out.data(), kTokens.data(), wte_local.data(), N, C, vocab_start, V_local);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t row = kTokens[n] - vocab_start;
    const bool mine = row >= 0 && row < V_local;
    for (int64_t c = 0; c < C; ++c) {
      EXPECT_EQ(out[n * C + c], mine ? wte_local[row * C + c] : 0.0)
          << "token " << kTokens[n] << " at n " << n << ", c " << c;
    }
  }
}

TEST(Embedding, BackwardMatchesCentralDifferencesOnAShard) {
  const int64_t N = static_cast<int64_t>(kTokens.size()), C = 6;
  const int64_t vocab_start = 4, V_local = 4;
  auto wte_local = tt::random_vector(V_local * C, 52), r = tt::random_vector(N * C, 53);
  std::vector<double> dwte(V_local * C, 0.0);
  embedding_backward(dwte.data(), r.data(), kTokens.data(), N, C, vocab_start, V_local);
  auto loss = [&] {
    std::vector<double> out(N * C);
    embedding_forward(out.data(), kTokens.data(), wte_local.data(), N, C, vocab_start, V_local);
    return tt::dot(out, r);
  };
  tt::expect_gradient_close("dwte_local", loss, wte_local, dwte, 1e-7);
  // Row 4 - 4 = 0 never appears (no token 4): its gradient is exactly zero. Row 7 - 4 = 3 gets
  // three rows of r (n = 1, 6, 7).
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_EQ(dwte[0 * C + c], 0.0) << "c " << c;
    EXPECT_DOUBLE_EQ(dwte[3 * C + c], r[1 * C + c] + r[6 * C + c] + r[7 * C + c]) << "c " << c;
  }
}

TEST(Embedding, BackwardAccumulates) {
  const int64_t N = static_cast<int64_t>(kTokens.size()), C = 3;
  auto r = tt::random_vector(N * C, 54);
  std::vector<double> fresh(kEmbVocab * C, 0.0), prefilled(kEmbVocab * C, 0.5);
  embedding_backward(fresh.data(), r.data(), kTokens.data(), N, C, 0, kEmbVocab);
  embedding_backward(prefilled.data(), r.data(), kTokens.data(), N, C, 0, kEmbVocab);
  for (auto& x : fresh) x += 0.5;
  tt::expect_all_close("dwte accumulates", prefilled, fresh, 1e-15);
}

// Sharding the vocabulary in two and adding the ranks' outputs gives the full lookup; the
// shards' gradients are the full gradient's row blocks.
TEST(Embedding, ShardsSumToTheFullTable) {
  const int64_t N = static_cast<int64_t>(kTokens.size()), C = 4, half = kEmbVocab / 2;
  auto wte = tt::random_vector(kEmbVocab * C, 55), r = tt::random_vector(N * C, 56);
  std::vector<double> full(N * C), lo(N * C), hi(N * C);
  embedding_forward(full.data(), kTokens.data(), wte.data(), N, C, 0, kEmbVocab);
  embedding_forward(lo.data(), kTokens.data(), wte.data(), N, C, 0, half);
  embedding_forward(hi.data(), kTokens.data(), wte.data() + half * C, N, C, half, kEmbVocab - half);
  for (int64_t i = 0; i < N * C; ++i) ASSERT_EQ(lo[i] + hi[i], full[i]) << "element " << i;

  std::vector<double> dfull(kEmbVocab * C, 0.0), dlo(half * C, 0.0),
      dhi((kEmbVocab - half) * C, 0.0);
  embedding_backward(dfull.data(), r.data(), kTokens.data(), N, C, 0, kEmbVocab);
  embedding_backward(dlo.data(), r.data(), kTokens.data(), N, C, 0, half);
  embedding_backward(dhi.data(), r.data(), kTokens.data(), N, C, half, kEmbVocab - half);
  dlo.insert(dlo.end(), dhi.begin(), dhi.end());
  EXPECT_EQ(dlo, dfull);
}

TEST(Embedding, PositionalForwardAddsAndBackwardMatchesCentralDifferences) {
  const int64_t B = 3, Tlen = 4, C = 5, maxT = 6;
  auto wpe = tt::random_vector(maxT * C, 57), base = tt::random_vector(B * Tlen * C, 58);
  auto r = tt::random_vector(B * Tlen * C, 59);
  auto out = base;
  positional_forward(out.data(), wpe.data(), B, Tlen, C);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < Tlen; ++t) {
      for (int64_t c = 0; c < C; ++c) {
        const int64_t i = (b * Tlen + t) * C + c;
        ASSERT_EQ(out[i], base[i] + wpe[t * C + c]) << "b " << b << " t " << t << " c " << c;
      }
    }
  }
  std::vector<double> dwpe(maxT * C, 0.25);  // pre-filled: backward accumulates
  positional_backward(dwpe.data(), r.data(), B, Tlen, C);
  for (auto& x : dwpe) x -= 0.25;
  auto loss = [&] {
    auto y = base;
    positional_forward(y.data(), wpe.data(), B, Tlen, C);
    return tt::dot(y, r);
  };
  tt::expect_gradient_close("dwpe", loss, wpe, dwpe, 1e-7);
  for (int64_t i = Tlen * C; i < maxT * C; ++i) EXPECT_EQ(dwpe[i], 0.0) << "row past T, i " << i;
}

// Sizes above the parallel threshold (column-blocked scatter, rows of wpe across threads).
TEST(Embedding, FloatAgreesWithDouble) {
  const int64_t B = 4, Tlen = 64, C = 130, N = B * Tlen, V_local = 50, vocab_start = 25;
  std::vector<int32_t> tokens(N);
  for (int64_t n = 0; n < N; ++n) tokens[n] = static_cast<int32_t>((n * 37) % 100);
  auto wte = tt::random_vector(V_local * C, 60), wpe = tt::random_vector(Tlen * C, 61);
  auto dout = tt::random_vector(N * C, 62);
  std::vector<double> out(N * C), dwte(V_local * C, 0.0), dwpe(Tlen * C, 0.0);
  embedding_forward(out.data(), tokens.data(), wte.data(), N, C, vocab_start, V_local);
  positional_forward(out.data(), wpe.data(), B, Tlen, C);
  embedding_backward(dwte.data(), dout.data(), tokens.data(), N, C, vocab_start, V_local);
  positional_backward(dwpe.data(), dout.data(), B, Tlen, C);

  auto wte_f = tt::cast_vector<float>(wte), wpe_f = tt::cast_vector<float>(wpe);
  auto dout_f = tt::cast_vector<float>(dout);
  std::vector<float> out_f(N * C), dwte_f(V_local * C, 0.0f), dwpe_f(Tlen * C, 0.0f);
  embedding_forward(out_f.data(), tokens.data(), wte_f.data(), N, C, vocab_start, V_local);
  positional_forward(out_f.data(), wpe_f.data(), B, Tlen, C);
  embedding_backward(dwte_f.data(), dout_f.data(), tokens.data(), N, C, vocab_start, V_local);
  positional_backward(dwpe_f.data(), dout_f.data(), B, Tlen, C);
  tt::expect_all_close("out float vs double", out_f, out, 1e-5, tt::rms(out));
  tt::expect_all_close("dwte float vs double", dwte_f, dwte, 1e-5, tt::rms(dwte));
  tt::expect_all_close("dwpe float vs double", dwpe_f, dwpe, 1e-5, tt::rms(dwpe));
}

}  // namespace
}  // namespace tessera::backends::cpu
