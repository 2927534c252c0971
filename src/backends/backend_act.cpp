// Backend's ops on activations of either precision: bf16 arguments are widened into fp32
// scratch, the fp32 op runs, bf16 outputs are rounded back (backend.h). Every argument of one
// op has its own scratch slot, so aliased arguments (an output over an input) stay correct: all
// inputs are widened before the op writes anything.
#include "backends/backend.h"

namespace tessera::backends {

float* Backend::wide(int slot, int64_t n) {
  core::Tensor& t = wide_[slot];
  if (t.numel() < n) {
    synchronize();  // queued ops may still read the old buffer
    t = zeros({n});
  }
  return t.f32();
}

void Backend::reserve_activation_scratch(int64_t n) {
  for (int slot = 0; slot < 3; ++slot) wide(slot, n);
}

size_t Backend::activation_scratch_bytes() const {
  size_t bytes = 0;
  for (const core::Tensor& t : wide_) bytes += t.defined() ? t.bytes() : 0;
  return bytes;
}

const float* Backend::widen(int slot, core::ConstAct x, int64_t n) {
  if (x.is_f32()) return x.f32();
  float* w = wide(slot, n);
  bf16_to_f32(w, x.bf16(), n);
  return w;
}

float* Backend::result(int slot, core::Act x, int64_t n) {
  return x.is_f32() ? x.f32() : wide(slot, n);
}

void Backend::narrow(core::Act x, const float* result, int64_t n) {
  if (!x.is_f32()) f32_to_bf16(x.bf16(), result, n);
}

void Backend::convert(core::Act dst, core::ConstAct src, int64_t n) {
  if (dst.is_f32() && src.is_f32()) return copy(dst.f32(), src.f32(), n * sizeof(float));
  if (dst.is_f32()) return bf16_to_f32(dst.f32(), src.bf16(), n);
  if (src.is_f32()) return f32_to_bf16(dst.bf16(), src.f32(), n);
  copy(dst.bf16(), src.bf16(), n * sizeof(uint16_t));
}

void Backend::matmul_forward(core::Act out, core::ConstAct inp, const float* weight,
                             const float* bias, int64_t N, int64_t C, int64_t OC) {
  const float* x = widen(1, inp, N * C);
  float* y = result(0, out, N * OC);
  matmul_forward(y, x, weight, bias, N, C, OC);
  narrow(out, y, N * OC);
}

void Backend::matmul_gelu_forward(core::Act out, core::Act pre_gelu, core::ConstAct inp,
                                  const float* weight, const float* bias, int64_t N, int64_t C,
                                  int64_t OC) {
  const float* x = widen(2, inp, N * C);
  float* y = result(0, out, N * OC);
  float* pre = result(1, pre_gelu, N * OC);
  matmul_gelu_forward(y, pre, x, weight, bias, N, C, OC);
  narrow(pre_gelu, pre, N * OC);
  narrow(out, y, N * OC);
}

void Backend::matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                              core::ConstAct inp, const float* weight, int64_t N, int64_t C,
                              int64_t OC) {
  matmul_backward(dinp, dweight, dbias, dout, widen(0, inp, N * C), weight, N, C, OC);
}

void Backend::layernorm_forward(core::Act out, float* mean, float* rstd, core::ConstAct inp,
                                const float* weight, const float* bias, int64_t N, int64_t C) {
  const float* x = widen(1, inp, N * C);
  float* y = result(0, out, N * C);
  layernorm_forward(y, mean, rstd, x, weight, bias, N, C);
  narrow(out, y, N * C);
}

void Backend::layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                 core::ConstAct inp, const float* weight, const float* mean,
                                 const float* rstd, int64_t N, int64_t C) {
  layernorm_backward(dinp, dweight, dbias, dout, widen(0, inp, N * C), weight, mean, rstd, N, C);
}

void Backend::gelu_backward(float* dinp, core::ConstAct inp, const float* dout, int64_t n) {
  gelu_backward(dinp, widen(0, inp, n), dout, n);
}

void Backend::residual_forward(core::Act out, core::ConstAct a, core::ConstAct b, int64_t n) {
  const float* x = widen(1, a, n);
  const float* y = widen(2, b, n);
  float* sum = result(0, out, n);
  residual_forward(sum, x, y, n);
  narrow(out, sum, n);
}

void Backend::add_bias(core::Act out, const float* bias, int64_t N, int64_t C) {
  if (out.is_f32()) return add_bias(out.f32(), bias, N, C);
  float* y = wide(0, N * C);
  bf16_to_f32(y, out.bf16(), N * C);
  add_bias(y, bias, N, C);
  narrow(out, y, N * C);
}

void Backend::attention_forward(core::Act out, float* stats, float* workspace, core::ConstAct qkv,
                                int64_t B, int64_t T, int64_t C, int64_t NH) {
  const float* x = widen(1, qkv, B * T * 3 * C);
  float* y = result(0, out, B * T * C);
  attention_forward(y, stats, workspace, x, B, T, C, NH);
  narrow(out, y, B * T * C);
}

void Backend::attention_backward(float* dqkv, float* workspace, const float* dout,
                                 core::ConstAct qkv, const float* stats, int64_t B, int64_t T,
                                 int64_t C, int64_t NH) {
  attention_backward(dqkv, workspace, dout, widen(0, qkv, B * T * 3 * C), stats, B, T, C, NH);
}

void Backend::embedding_forward(core::Act out, const int32_t* tokens, const float* wte_local,
                                int64_t N, int64_t C, int64_t vocab_start, int64_t V_local) {
  float* y = result(0, out, N * C);
  embedding_forward(y, tokens, wte_local, N, C, vocab_start, V_local);
  narrow(out, y, N * C);
}

void Backend::positional_forward(core::Act out, const float* wpe, int64_t B, int64_t T, int64_t C) {
  if (out.is_f32()) return positional_forward(out.f32(), wpe, B, T, C);
  float* y = wide(0, B * T * C);
  bf16_to_f32(y, out.bf16(), B * T * C);
  positional_forward(y, wpe, B, T, C);
  narrow(out, y, B * T * C);
}

}  // namespace tessera::backends
