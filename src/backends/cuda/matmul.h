// Fully connected layer on the GPU through cuBLASLt, the twin of backends/cpu/matmul.h:
// out = inp · weightᵀ + bias with weight (OC, C) row-major; same argument order and accumulation
// rules. fp32 runs in true fp32 (CUBLAS_COMPUTE_32F: no TF32); bf16 operands accumulate in fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "backends/cuda/stream.h"

namespace tessera::backends::cuda {

// Owns the cuBLASLt handle and one workspace, both made once on the device current at
// construction; every launcher below takes it and must run with that device current.
// Not thread-safe, and the workspace is shared: GEMMs through one context must be queued on one
// stream (or on streams ordered by events), never on two streams that may overlap.
class MatmulContext {
 public:
  // 32 MiB: what cuBLASLt's Hopper kernels can use; more buys nothing.
  static constexpr size_t kDefaultWorkspaceBytes = size_t{32} << 20;

  // Throws tessera::Error when the handle or the workspace cannot be made.
  explicit MatmulContext(size_t workspace_bytes = kDefaultWorkspaceBytes);
  ~MatmulContext();
  MatmulContext(const MatmulContext&) = delete;
  MatmulContext& operator=(const MatmulContext&) = delete;

  size_t workspace_bytes() const;
  // How many GEMMs asked for a fused epilogue (bias, GELU) that cuBLASLt could not do for their
  // sizes, types or alignment, so that our own kernels did that step instead (same result).
  int64_t epilogue_fallbacks() const;

  struct Impl;  // defined in matmul.cu
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// All pointers are device memory; bf16 tensors are raw bits (uint16_t), 2 bytes each. Work is
// queued on `stream`. Sizes: N >= 0, C >= 1, OC >= 0. Outputs must not alias inputs.

// out: (N, OC) = inp (N, C) · weight (OC, C)ᵀ + bias (OC), broadcast over rows. OVERWRITES out.
// bias may be null (no bias). fp32 throughout.
void matmul_forward(MatmulContext& ctx, float* out, const float* inp, const float* weight,
                    const float* bias, int64_t N, int64_t C, int64_t OC, Stream stream);

// The same with bf16 inp and weight, products accumulated in fp32, and out (with its bias) either
// bf16 (rounded to nearest even once, after the bias) or fp32.
void matmul_forward_bf16(MatmulContext& ctx, uint16_t* out, const uint16_t* inp,
                         const uint16_t* weight, const uint16_t* bias, int64_t N, int64_t C,
                         int64_t OC, Stream stream);
void matmul_forward_bf16(MatmulContext& ctx, float* out, const uint16_t* inp,
                         const uint16_t* weight, const float* bias, int64_t N, int64_t C,
                         int64_t OC, Stream stream);

// The MLP's first layer and its activation in one call, in place of the CPU's matmul_forward then
// gelu_forward (backends/cpu/gelu.h, tanh form):
//   pre_gelu (N, OC) = inp · weightᵀ + bias   OVERWRITTEN; saved for gelu_backward.
//   out (N, OC)      = gelu(pre_gelu)         OVERWRITTEN.
// Fused into the GEMM (cuBLASLt GELU_AUX_BIAS epilogue) when cuBLASLt allows it (it needs
// OC % 8 == 0 and 16-byte aligned pre_gelu); otherwise the GEMM writes pre_gelu and our own
// kernel applies gelu. bias may be null.
void matmul_gelu_forward(MatmulContext& ctx, float* out, float* pre_gelu, const float* inp,
                         const float* weight, const float* bias, int64_t N, int64_t C, int64_t OC,
                         Stream stream);
void matmul_gelu_forward_bf16(MatmulContext& ctx, uint16_t* out, uint16_t* pre_gelu,
                              const uint16_t* inp, const uint16_t* weight, const uint16_t* bias,
                              int64_t N, int64_t C, int64_t OC, Stream stream);

// Backward of matmul_forward. dout: (N, OC); inp: (N, C); weight: (OC, C).
//   dinp (N, C)     = dout · weight        OVERWRITES; skipped when dinp is null.
//   dweight (OC, C) += doutᵀ · inp         ACCUMULATES.
//   dbias (OC)      += sum over n of dout  ACCUMULATES; skipped when dbias is null.
// Derivation in backends/cpu/matmul.cpp. dbias is summed by our kernel in a fixed order (no
// atomics): the same inputs give the same bits on every run.
void matmul_backward(MatmulContext& ctx, float* dinp, float* dweight, float* dbias,
                     const float* dout, const float* inp, const float* weight, int64_t N, int64_t C,
                     int64_t OC, Stream stream);

// Mixed precision: dout, inp and weight bf16; dweight and dbias are the fp32 gradient arena (+=,
// accumulated in fp32); dinp bf16 or fp32 (OVERWRITES, null skips it).
void matmul_backward_bf16(MatmulContext& ctx, uint16_t* dinp, float* dweight, float* dbias,
                          const uint16_t* dout, const uint16_t* inp, const uint16_t* weight,
                          int64_t N, int64_t C, int64_t OC, Stream stream);
void matmul_backward_bf16(MatmulContext& ctx, float* dinp, float* dweight, float* dbias,
                          const uint16_t* dout, const uint16_t* inp, const uint16_t* weight,
                          int64_t N, int64_t C, int64_t OC, Stream stream);

}  // namespace tessera::backends::cuda
