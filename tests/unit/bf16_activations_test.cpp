// bf16 activations (train.dtype: bf16). The Backend's ops on core::Act arguments are their fp32
// ops on the bf16 inputs' exact values with each bf16 output rounded once (checked bit for bit
// against that recipe, aliasing included); a GPT built with bf16 activations keeps them in bf16,
// in about half the activation memory, allocates no scratch once built, tracks the fp32 model's
// loss and gradients within bf16's precision, and refuses to decode.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "core/bf16.h"
#include "core/config.h"
#include "core/error.h"
#include "models/gpt.h"
#include "models/kv_cache.h"

namespace tessera {
namespace {

using core::Act;
using core::ConstAct;

std::vector<float> random_floats(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(gen);
  return v;
}

std::vector<uint16_t> to_bf16(const std::vector<float>& x) {
  std::vector<uint16_t> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = core::to_bf16(x[i]);
  return out;
}

std::vector<float> from_bf16(const std::vector<uint16_t>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = core::from_bf16(x[i]);
  return out;
}

// Expects the bf16 result to be the fp32 reference rounded, bit for bit.
void expect_rounded(const std::vector<uint16_t>& got, const std::vector<float>& fp32_reference,
                    const char* what) {
  ASSERT_EQ(got.size(), fp32_reference.size()) << what;
  int64_t wrong = 0;
  for (size_t i = 0; i < got.size(); ++i) wrong += got[i] != core::to_bf16(fp32_reference[i]);
  EXPECT_EQ(wrong, 0) << what << ": elements that are not the fp32 result rounded once";
}

class Bf16ActivationOps : public ::testing::Test {
 protected:
  static constexpr int64_t N = 6, C = 32, OC = 48, B = 2, T = 3, NH = 4;
  backends::CpuBackend be;
};

TEST_F(Bf16ActivationOps, ConversionsAreExactAndRoundToNearestEven) {
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: the tie goes to the even one, 1; 1 + 3 * 2^-8,
  // halfway between 1 + 2^-7 and 1 + 2^-6, goes up to the even 1 + 2^-6. NaN stays NaN.
  const std::vector<float> x = {1.0f + 0x1p-8f, 1.0f + 0x3p-8f, -2.5f,   0.0f,
                                -0.0f,          1e-40f,         3.0e38f, std::nanf("")};
  std::vector<uint16_t> bits(x.size());
  be.f32_to_bf16(bits.data(), x.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(bits[i], core::to_bf16(x[i])) << "element " << i;
  EXPECT_EQ(core::from_bf16(bits[0]), 1.0f);
  EXPECT_EQ(core::from_bf16(bits[1]), 1.0f + 0x1p-6f);
  std::vector<float> back(x.size());
  be.bf16_to_f32(back.data(), bits.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i + 1 < x.size(); ++i) EXPECT_EQ(back[i], core::from_bf16(bits[i]));
  EXPECT_TRUE(std::isnan(back.back()));
}

TEST_F(Bf16ActivationOps, MatmulsAreTheFp32OpsOfTheExactInputsRoundedOnce) {
  const std::vector<uint16_t> inp = to_bf16(random_floats(N * C, 1));
  const std::vector<float> w = random_floats(OC * C, 2, 0.2f), bias = random_floats(OC, 3);
  const std::vector<float> x = from_bf16(inp);
  // forward: bf16 out, and fp32 out (the LM head's logits) from bf16 inputs.
  std::vector<float> ref(N * OC), ref_pre(N * OC), ref_gelu(N * OC);
  be.matmul_forward(ref.data(), x.data(), w.data(), bias.data(), N, C, OC);
  std::vector<uint16_t> out(N * OC), pre(N * OC);
  be.matmul_forward(Act::bf16(out.data()), ConstAct::bf16(inp.data()), w.data(), bias.data(), N, C,
                    OC);
  expect_rounded(out, ref, "matmul_forward");
  std::vector<float> out32(N * OC);
  be.matmul_forward(Act(out32.data()), ConstAct::bf16(inp.data()), w.data(), bias.data(), N, C, OC);
  EXPECT_EQ(out32, ref) << "an fp32 output from a bf16 input is not rounded";
  be.matmul_gelu_forward(ref_gelu.data(), ref_pre.data(), x.data(), w.data(), bias.data(), N, C,
                         OC);
  be.matmul_gelu_forward(Act::bf16(out.data()), Act::bf16(pre.data()), ConstAct::bf16(inp.data()),
                         w.data(), bias.data(), N, C, OC);
  expect_rounded(pre, ref_pre, "matmul_gelu_forward's pre-GELU");
  // gelu of the fp32 pre-activation, rounded once (not gelu of the rounded pre-activation).
  expect_rounded(out, ref_gelu, "matmul_gelu_forward's output");
  // backward: fp32 gradients from a bf16 saved input.
  const std::vector<float> dout = random_floats(N * OC, 4);
  std::vector<float> dinp_ref(N * C), dw_ref(OC * C, 0.5f), db_ref(OC, 0.25f);
  std::vector<float> dinp(N * C), dw(OC * C, 0.5f), db(OC, 0.25f);
  be.matmul_backward(dinp_ref.data(), dw_ref.data(), db_ref.data(), dout.data(), x.data(), w.data(),
                     N, C, OC);
  be.matmul_backward(dinp.data(), dw.data(), db.data(), dout.data(), ConstAct::bf16(inp.data()),
                     w.data(), N, C, OC);
  EXPECT_EQ(dinp, dinp_ref);
  EXPECT_EQ(dw, dw_ref);
  EXPECT_EQ(db, db_ref);
}

TEST_F(Bf16ActivationOps, ElementWiseOpsRoundOnceEvenWhenTheOutputIsAnInput) {
  const std::vector<uint16_t> a = to_bf16(random_floats(N * C, 5)),
                              b = to_bf16(random_floats(N * C, 6));
  const std::vector<float> xa = from_bf16(a), xb = from_bf16(b), bias = random_floats(C, 7);
  std::vector<float> ref(N * C);
  be.residual_forward(ref.data(), xa.data(), xb.data(), N * C);
  std::vector<uint16_t> out(N * C);
  be.residual_forward(Act::bf16(out.data()), ConstAct::bf16(a.data()), ConstAct::bf16(b.data()),
                      N * C);
  expect_rounded(out, ref, "residual_forward");
  std::vector<uint16_t> in_place = a;  // out aliases a
  be.residual_forward(Act::bf16(in_place.data()), ConstAct::bf16(in_place.data()),
                      ConstAct::bf16(b.data()), N * C);
  expect_rounded(in_place, ref, "residual_forward in place");
  // add_bias reads its bf16 output, adds in fp32, rounds once.
  std::vector<float> biased = xa;
  be.add_bias(biased.data(), bias.data(), N, C);
  std::vector<uint16_t> y = a;
  be.add_bias(Act::bf16(y.data()), bias.data(), N, C);
  expect_rounded(y, biased, "add_bias");
  // gelu_backward from a bf16 saved input.
  const std::vector<float> dout = random_floats(N * C, 8);
  std::vector<float> dref(N * C), d(N * C);
  be.gelu_backward(dref.data(), xa.data(), dout.data(), N * C);
  be.gelu_backward(d.data(), ConstAct::bf16(a.data()), dout.data(), N * C);
  EXPECT_EQ(d, dref);
  // convert, every direction.
  std::vector<uint16_t> c16(N * C);
  be.convert(Act::bf16(c16.data()), ConstAct(ref.data()), N * C);
  expect_rounded(c16, ref, "convert f32 -> bf16");
  std::vector<float> c32(N * C);
  be.convert(Act(c32.data()), ConstAct::bf16(a.data()), N * C);
  EXPECT_EQ(c32, xa);
  std::vector<uint16_t> copy(N * C);
  be.convert(Act::bf16(copy.data()), ConstAct::bf16(a.data()), N * C);
  EXPECT_EQ(copy, a);
}

TEST_F(Bf16ActivationOps, LayernormAttentionAndEmbeddingsRoundTheirOutputsOnce) {
  const std::vector<uint16_t> inp = to_bf16(random_floats(N * C, 9, 3.0f));
  const std::vector<float> x = from_bf16(inp);
  const std::vector<float> w = random_floats(C, 10), bias = random_floats(C, 11);
  std::vector<float> ref(N * C), mean_ref(N), rstd_ref(N), mean(N), rstd(N);
  be.layernorm_forward(ref.data(), mean_ref.data(), rstd_ref.data(), x.data(), w.data(),
                       bias.data(), N, C);
  std::vector<uint16_t> out(N * C);
  be.layernorm_forward(Act::bf16(out.data()), mean.data(), rstd.data(), ConstAct::bf16(inp.data()),
                       w.data(), bias.data(), N, C);
  expect_rounded(out, ref, "layernorm_forward");
  EXPECT_EQ(mean, mean_ref);
  EXPECT_EQ(rstd, rstd_ref);
  const std::vector<float> dout = random_floats(N * C, 12);
  std::vector<float> dref(N * C, 1.0f), dw_ref(C), db_ref(C), d(N * C, 1.0f), dw(C), db(C);
  be.layernorm_backward(dref.data(), dw_ref.data(), db_ref.data(), dout.data(), x.data(), w.data(),
                        mean.data(), rstd.data(), N, C);
  be.layernorm_backward(d.data(), dw.data(), db.data(), dout.data(), ConstAct::bf16(inp.data()),
                        w.data(), mean.data(), rstd.data(), N, C);
  EXPECT_EQ(d, dref);
  EXPECT_EQ(dw, dw_ref);
  EXPECT_EQ(db, db_ref);

  // Attention: (B, T, 3C) bf16 qkv -> (B, T, C) bf16 out; fp32 statistics and gradients.
  const std::vector<uint16_t> qkv = to_bf16(random_floats(B * T * 3 * C, 13));
  const std::vector<float> q = from_bf16(qkv);
  std::vector<float> ws(be.attention_workspace_size(B, T, C, NH));
  std::vector<float> aref(B * T * C), sref(B * NH * T * 2), stats(B * NH * T * 2);
  be.attention_forward(aref.data(), sref.data(), ws.data(), q.data(), B, T, C, NH);
  std::vector<uint16_t> att(B * T * C);
  be.attention_forward(Act::bf16(att.data()), stats.data(), ws.data(), ConstAct::bf16(qkv.data()),
                       B, T, C, NH);
  expect_rounded(att, aref, "attention_forward");
  EXPECT_EQ(stats, sref);
  const std::vector<float> datt = random_floats(B * T * C, 14);
  std::vector<float> dqkv_ref(B * T * 3 * C), dqkv(B * T * 3 * C);
  be.attention_backward(dqkv_ref.data(), ws.data(), datt.data(), q.data(), stats.data(), B, T, C,
                        NH);
  be.attention_backward(dqkv.data(), ws.data(), datt.data(), ConstAct::bf16(qkv.data()),
                        stats.data(), B, T, C, NH);
  EXPECT_EQ(dqkv, dqkv_ref);

  // Embedding lookup, then positions added to bf16 rows (read, add in fp32, round).
  const int64_t V = 10;
  const std::vector<float> wte = random_floats(V * C, 15), wpe = random_floats(T * C, 16);
  const std::vector<int32_t> tokens = {3, 1, 4, 1, 5, 9};
  std::vector<float> eref(B * T * C);
  be.embedding_forward(eref.data(), tokens.data(), wte.data(), B * T, C, 0, V);
  std::vector<uint16_t> e(B * T * C);
  be.embedding_forward(Act::bf16(e.data()), tokens.data(), wte.data(), B * T, C, 0, V);
  expect_rounded(e, eref, "embedding_forward");
  std::vector<float> pref = from_bf16(e);
  be.positional_forward(pref.data(), wpe.data(), B, T, C);
  be.positional_forward(Act::bf16(e.data()), wpe.data(), B, T, C);
  expect_rounded(e, pref, "positional_forward");
}

// A GPT of 8 layers whose activations dominate its arena.
core::ModelConfig small_model() {
  core::ModelConfig m;
  m.vocab_size = 96;
  m.pad_vocab_to = 32;
  m.max_seq_len = 32;
  m.n_layer = 8;
  m.n_head = 4;
  m.n_embd = 64;
  return m;
}

std::vector<int32_t> tokens_of(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> dist(0, 95);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int32_t& t : v) t = dist(gen);
  return v;
}

TEST(Bf16Activations, AModelKeepsThemInBf16InLittleMoreThanHalfTheMemory) {
  const core::ModelConfig m = small_model();
  const int64_t B = 2, T = 32;
  backends::CpuBackend be32, be16;
  models::Gpt fp32(m, B, T, nullptr, &be32);
  models::Gpt bf16(m, B, T, nullptr, &be16, false, {}, models::Gpt::Purpose::kTrain,
                   core::DType::kBF16);
  EXPECT_EQ(fp32.activation_dtype(), core::DType::kF32);
  EXPECT_EQ(bf16.activation_dtype(), core::DType::kBF16);
  const double ratio =
      static_cast<double>(bf16.activation_bytes() + be16.activation_scratch_bytes()) /
      static_cast<double>(fp32.activation_bytes());
  std::printf(
      "activation arena: fp32 %lld bytes, bf16 %lld bytes + %zu bytes of op scratch (%.3f)\n",
      static_cast<long long>(fp32.activation_bytes()),
      static_cast<long long>(bf16.activation_bytes()), be16.activation_scratch_bytes(), ratio);
  // 18 (B*T, C)-sized activations a layer are halved; the gradient scratch, the logits and the
  // op scratch (3 x (B*T, 4C) fp32) stay fp32.
  EXPECT_LT(ratio, 0.75);
  EXPECT_EQ(be32.activation_scratch_bytes(), 0u) << "an fp32 model needs no op scratch";
}

// Relative L2 distance of two vectors.
double rel_l2(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

TEST(Bf16Activations, LossAndGradientsTrackFp32AndNoStepAllocates) {
  const core::ModelConfig m = small_model();
  const int64_t B = 2, T = 32;
  backends::CpuBackend be32, be16;
  be16.set_bf16_matmuls(true);
  models::Gpt fp32(m, B, T, nullptr, &be32);
  models::Gpt bf16(m, B, T, nullptr, &be16, false, {}, models::Gpt::Purpose::kTrain,
                   core::DType::kBF16);
  fp32.init_weights(7);
  bf16.init_weights(7);
  const size_t scratch = be16.activation_scratch_bytes();
  const std::vector<int32_t> tokens = tokens_of(B * T, 1), targets = tokens_of(B * T, 2);
  double loss[2];
  int i = 0;
  for (models::Gpt* g : {&fp32, &bf16}) {
    g->zero_grad();
    int64_t n = 0;
    loss[i++] = g->forward(tokens.data(), targets.data(), B, T, &n) / static_cast<double>(n);
    g->backward(1.0f / static_cast<float>(n));
  }
  const double loss_diff = std::abs(loss[1] - loss[0]) / loss[0];
  const double grad_diff = rel_l2(bf16.grads().f32(), fp32.grads().f32(), fp32.grads().numel());
  std::printf("loss fp32 %.6f, bf16 %.6f (relative %.3g); gradients' relative L2 distance %.3g\n",
              loss[0], loss[1], loss_diff, grad_diff);
  EXPECT_GT(loss_diff, 0.0) << "bf16 gave fp32's loss: were the activations rounded?";
  EXPECT_LT(loss_diff, 1e-3);
  EXPECT_LT(grad_diff, 2e-2);
  EXPECT_EQ(be16.activation_scratch_bytes(), scratch)
      << "a forward and backward grew the op scratch: the model reserved too little";
}

TEST(Bf16Activations, DecodeIsRefusedAndInferenceModelsAreFp32) {
  const core::ModelConfig m = small_model();
  backends::CpuBackend be;
  EXPECT_THROW(models::Gpt(m, 1, 8, nullptr, &be, false, {}, models::Gpt::Purpose::kInference,
                           core::DType::kBF16),
               Error);
  models::Gpt train(m, 1, 8, nullptr, &be, false, {}, models::Gpt::Purpose::kTrain,
                    core::DType::kBF16);
  models::KvCache cache(train, 1);
  const int32_t token = 1, slot = 0, position = 0;
  EXPECT_THROW(train.decode(cache, &token, &slot, &position, 1), Error);
}

}  // namespace
}  // namespace tessera
