// CudaBackend: the Backend interface over the CUDA kernels of this folder (cuBLASLt GEMMs in true
// fp32, our .cu kernels). Every op is queued on one owned non-blocking compute stream in call
// order; only copies to and from the host, sum_squares and sum_losses wait for it.
#pragma once

#include <map>
#include <utility>

#include "backends/backend.h"
#include "backends/cuda/device.h"
#include "backends/cuda/matmul.h"

namespace tessera::backends {

// Lifetime: construct with the device already selected (make_cuda_backend does it); the device
// current at construction must stay current on the driving host thread. Tensors from zeros() own
// their memory and may outlive the backend. Thread-safety: none (one host thread, as Backend).
class CudaBackend final : public Backend {
 public:
  // Which kernels train attention: the fused ones (flash_attention.h) where the head size allows
  // (32, 64, 128), else the plain ones (attention.h); or the plain ones always.
  enum class Attention { kFused, kPlain };
  // Creates the compute stream, the cuBLASLt context (with its 32 MiB workspace) and the
  // reduction scratch on the current device. Throws tessera::Error when CUDA refuses any of them.
  explicit CudaBackend(Attention attention = Attention::kFused);
  ~CudaBackend() override;

  // The ops on activations of either precision (backend.h) beside the fp32 overrides below.
  using Backend::add_bias;
  using Backend::embedding_forward;
  using Backend::positional_forward;

  core::Device device() const override { return core::Device::kCuda; }
  std::string describe() const override;

  core::Tensor zeros(const core::Shape& shape, core::DType dtype) override;
  void copy_to_device(void* dst, const void* src_host, size_t bytes) override;
  void copy_to_host(void* dst_host, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void fill_zero(void* dst, size_t bytes) override;
  void fill(float* x, float value, int64_t n) override;
  void bf16_to_f32(float* dst, const uint16_t* src, int64_t n) override;
  void f32_to_bf16(uint16_t* dst, const float* src, int64_t n) override;
  void synchronize() override;
  void* stream() const override { return stream_.get(); }

  // Frozen with bf16 GEMM operands (generation and serving in bf16), each weight is converted to
  // bf16 once, at its first use, and its copy kept until the last unfreeze: a decode step then
  // reads 2 bytes a weight instead of converting 4. Frozen in fp32 nothing is kept.
  void freeze_weights(bool frozen) override;
  size_t frozen_copy_bytes() const override;

  void matmul_forward(float* out, const float* inp, const float* weight, const float* bias,
                      int64_t N, int64_t C, int64_t OC) override;
  void matmul_gelu_forward(float* out, float* pre_gelu, const float* inp, const float* weight,
                           const float* bias, int64_t N, int64_t C, int64_t OC) override;
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, int64_t N, int64_t C,
                       int64_t OC) override;
  // bf16 activations with bf16 GEMM operands: a bf16 input goes to the bf16 GEMM as it is (no
  // widening and converting back); the fp32 result is then rounded into a bf16 output.
  void matmul_forward(core::Act out, core::ConstAct inp, const float* weight, const float* bias,
                      int64_t N, int64_t C, int64_t OC) override;
  void matmul_gelu_forward(core::Act out, core::Act pre_gelu, core::ConstAct inp,
                           const float* weight, const float* bias, int64_t N, int64_t C,
                           int64_t OC) override;
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                       core::ConstAct inp, const float* weight, int64_t N, int64_t C,
                       int64_t OC) override;
  // bf16 in and out: layernorm_forward_bf16 and residual_forward_bf16, one pass each.
  void layernorm_forward(core::Act out, float* mean, float* rstd, core::ConstAct inp,
                         const float* weight, const float* bias, int64_t N, int64_t C) override;
  void residual_forward(core::Act out, core::ConstAct a, core::ConstAct b, int64_t n) override;
  void gelu_backward(float* dinp, core::ConstAct inp, const float* dout, int64_t n) override;
  void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                          core::ConstAct inp, const float* weight, const float* mean,
                          const float* rstd, int64_t N, int64_t C) override;
  // The fused kernels read bf16 qkv and write a bf16 output directly (flash_attention_*_bf16).
  void attention_forward(core::Act out, float* stats, float* workspace, core::ConstAct qkv,
                         int64_t B, int64_t T, int64_t C, int64_t NH) override;
  void attention_backward(float* dqkv, float* workspace, const float* dout, core::ConstAct qkv,
                          const float* stats, int64_t B, int64_t T, int64_t C, int64_t NH) override;

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
  // When profiling, waits for the stream, runs op, waits again and adds the wall time to *slot;
  // otherwise just queues op.
  template <typename Op>
  void timed(double* slot, Op&& op);

  // Members are destroyed in reverse: the scratch and the GEMM context before their stream.
  // Whether attention over C channels in NH heads takes the fused kernels (fixed at construction,
  // so the workspace a model sizes stays right).
  bool fused_attention(int64_t C, int64_t NH) const;
  const Attention attention_;

  cuda::DeviceStream stream_;
  cuda::MatmulContext matmul_;
  // Reduction results and scratch, one allocation: sum_squares' kSumSquaresPartials partials and
  // result, then sum_losses' sum (double) and count (int64) side by side (one 16-byte download).
  cuda::DeviceBuffer scratch_;
  // bf16 copies of GEMM operands while bf16_matmuls() (inp, dout / weight / ...), grown at their
  // first use (the first step), then kept.
  cuda::DeviceBuffer bf16_operands_[3];
  const uint16_t* to_bf16(int slot, const float* x, int64_t n);
  // The weight's bf16 operand: its kept copy while frozen (made at its first use), else converted
  // into scratch slot 2 as the other operands are.
  const uint16_t* weight_bf16(const float* weight, int64_t n);
  int frozen_ = 0;  // freeze_weights(true) calls not yet undone
  std::map<std::pair<const float*, int64_t>, cuda::DeviceBuffer> frozen_bf16_;
};

// make_cuda_backend (backends/cuda_factory.h) is defined in cuda_backend.cpp: select_device, then
// a CudaBackend.

}  // namespace tessera::backends
