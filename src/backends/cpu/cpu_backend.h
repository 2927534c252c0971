// CpuBackend: the Backend interface over the CPU kernels of this folder (OpenBLAS GEMMs, OpenMP
// element-wise loops). Device memory is host memory; every op runs to completion before it
// returns, so synchronize() has nothing to wait for.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "backends/backend.h"
#include "backends/cpu/few_rows_matmul.h"

namespace tessera::backends {

class CpuBackend final : public Backend {
 public:
  CpuBackend() = default;

  // The ops on activations of either precision (backend.h) beside the fp32 overrides below.
  using Backend::add_bias;
  using Backend::attention_backward;
  using Backend::attention_forward;
  using Backend::embedding_forward;
  using Backend::gelu_backward;
  using Backend::layernorm_backward;
  using Backend::layernorm_forward;
  using Backend::matmul_backward;
  using Backend::matmul_forward;
  using Backend::matmul_gelu_forward;
  using Backend::positional_forward;
  using Backend::residual_forward;

  core::Device device() const override { return core::Device::kCpu; }
  std::string describe() const override;

  core::Tensor zeros(const core::Shape& shape, core::DType dtype) override;
  void copy_to_device(void* dst, const void* src_host, size_t bytes) override;
  void copy_to_host(void* dst_host, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void fill_zero(void* dst, size_t bytes) override;
  void fill(float* x, float value, int64_t n) override;
  void synchronize() override {}
  void* stream() const override { return nullptr; }

  void bf16_to_f32(float* dst, const uint16_t* src, int64_t n) override;
  void f32_to_bf16(uint16_t* dst, const float* src, int64_t n) override;

  void set_bf16_matmuls(bool on) override;
  void freeze_weights(bool frozen) override;
  size_t frozen_copy_bytes() const override;
  void matmul_forward(float* out, const float* inp, const float* weight, const float* bias,
                      int64_t N, int64_t C, int64_t OC) override;
  void matmul_gelu_forward(float* out, float* pre_gelu, const float* inp, const float* weight,
                           const float* bias, int64_t N, int64_t C, int64_t OC) override;
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, int64_t N, int64_t C,
                       int64_t OC) override;

  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                         const float* weight, const float* bias, int64_t N, int64_t C) override;
  void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                          const float* inp, const float* weight, const float* mean,
                          const float* rstd, int64_t N, int64_t C) override;
  void gelu_forward(float* out, const float* inp, int64_t n) override;
  void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) override;

  void residual_forward(float* out, const float* a, const float* b, int64_t n) override;
  void add_inplace(float* acc, const float* x, int64_t n) override;
  void scale_inplace(float* x, float s, int64_t n) override;
  void add_bias(float* out, const float* bias, int64_t N, int64_t C) override;
  double sum_squares(const float* x, int64_t n) override;

  void attention_forward(float* out, float* stats, float* workspace, const float* qkv, int64_t B,
                         int64_t T, int64_t C, int64_t NH) override;
  void attention_backward(float* dqkv, float* workspace, const float* dout, const float* qkv,
                          const float* stats, int64_t B, int64_t T, int64_t C, int64_t NH) override;
  int64_t attention_workspace_size(int64_t B, int64_t T, int64_t C, int64_t NH) override;
  void kv_append(float* k_cache, float* v_cache, const float* qkv, const KvPages& pages,
                 const int32_t* slots, const int32_t* positions, int64_t N, int64_t C) override;
  void attention_decode(float* out, const float* qkv, const float* k_cache, const float* v_cache,
                        const KvPages& pages, const int32_t* slots, const int32_t* positions,
                        int64_t N, int64_t C, int64_t NH) override;

  void embedding_forward(float* out, const int32_t* tokens, const float* wte_local, int64_t N,
                         int64_t C, int64_t vocab_start, int64_t V_local) override;
  void embedding_backward(float* dwte_local, const float* dout, const int32_t* tokens, int64_t N,
                          int64_t C, int64_t vocab_start, int64_t V_local) override;
  void positional_forward(float* out, const float* wpe, int64_t B, int64_t T, int64_t C) override;
  void positional_backward(float* dwpe, const float* dout, int64_t B, int64_t T,
                           int64_t C) override;
  void positional_rows(float* out, const float* wpe, const int32_t* positions, int64_t N,
                       int64_t C) override;

  void xent_row_max(float* row_max, const float* logits, int64_t N, int64_t n_cols,
                    int64_t ld) override;
  void xent_row_sumexp_target(float* sumexp, float* target_logit, const float* logits,
                              const int32_t* targets, const float* row_max, int64_t N,
                              int64_t n_cols, int64_t ld, int64_t vocab_start) override;
  void xent_loss(float* losses, const float* row_max, const float* sumexp,
                 const float* target_logit, const int32_t* targets, int64_t N) override;
  void xent_backward(float* dlogits, const float* logits, const int32_t* targets,
                     const float* row_max, const float* sumexp, const float* dlosses, int64_t N,
                     int64_t n_cols, int64_t ld, int64_t vocab_start) override;
  double sum_losses(const float* losses, const int32_t* targets, int64_t N,
                    int64_t* count) override;

  void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                    const AdamWHyper& h, bool decay) override;

 private:
  // out = inp · weightᵀ + bias: frozen, through the weight's packed copy (packed at its first
  // use) for any row count; else kc::matmul_forward. The same bits either way up to kFewRows
  // rows; past them the packed path keeps each row's fixed order, which the GEMM does not.
  void matmul(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
              int64_t C, int64_t OC);

  // bf16 operands: `x` (n floats) rounded to bf16 into scratch slot `slot` (grown at its first
  // use, then kept: the first step sizes it).
  const float* rounded(int slot, const float* x, int64_t n);

  int frozen_ = 0;  // freeze_weights(true) calls not yet undone
  std::vector<float> bf16_scratch_[3];
  std::map<std::tuple<const float*, int64_t, int64_t>, std::unique_ptr<cpu::PackedWeight>> packed_;
};

}  // namespace tessera::backends
