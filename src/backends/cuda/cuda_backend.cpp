// CudaBackend: each op forwards to its CUDA launcher on the compute stream, timed per kernel
// family when profiling; and make_cuda_backend, the factory of a CUDA build. Plain C++: only the
// launchers' headers, no CUDA header.
#include "backends/cuda/cuda_backend.h"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "backends/cuda/adamw.h"
#include "backends/cuda/attention.h"
#include "backends/cuda/crossentropy.h"
#include "backends/cuda/decode.h"
#include "backends/cuda/embedding.h"
#include "backends/cuda/flash_attention.h"
#include "backends/cuda/gelu.h"
#include "backends/cuda/layernorm.h"
#include "backends/cuda/misc.h"
#include "backends/cuda/residual.h"
#include "backends/cuda_factory.h"
#include "core/error.h"

namespace tessera::backends {

namespace kc = backends::cuda;

namespace {

// scratch_ layout, in bytes: partials | sum_squares result | loss sum | loss count.
constexpr size_t kPartialsOffset = 0;
constexpr size_t kSumSquaresOffset = kc::kSumSquaresPartials * sizeof(double);
constexpr size_t kLossTotalsOffset = kSumSquaresOffset + sizeof(double);

// sum_losses' two results as they lie in scratch_, downloaded in one copy.
struct LossTotals {
  double sum;
  int64_t count;
};
static_assert(sizeof(LossTotals) == sizeof(double) + sizeof(int64_t) &&
                  offsetof(LossTotals, count) == sizeof(double),
              "LossTotals mirrors the device layout");

constexpr size_t kScratchBytes = kLossTotalsOffset + sizeof(LossTotals);

}  // namespace

CudaBackend::CudaBackend(Attention attention) : attention_(attention), scratch_(kScratchBytes) {}

CudaBackend::~CudaBackend() {
  // Queued work may still read the scratch or the GEMM workspace freed next. A destructor must not
  // throw; a failure here leaves a sticky error the next CUDA call reports.
  try {
    stream_.synchronize();
  } catch (const Error&) {
  }
}

template <typename Op>
void CudaBackend::timed(double* slot, Op&& op) {
  if (!profiling_) {
    std::forward<Op>(op)();
    return;
  }
  // Kernels run asynchronously: wait before and after, so the interval is this op's alone.
  stream_.synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  std::forward<Op>(op)();
  stream_.synchronize();
  *slot += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string CudaBackend::describe() const { return kc::describe_device(); }

// ---- Memory -------------------------------------------------------------------------------------

core::Tensor CudaBackend::zeros(const core::Shape& shape, core::DType dtype) {
  const size_t bytes = static_cast<size_t>(core::shape_numel(shape)) * core::dtype_size(dtype);
  std::shared_ptr<kc::DeviceBuffer> buffer;
  try {
    buffer = std::make_shared<kc::DeviceBuffer>(bytes);
  } catch (const Error& e) {
    throw Error("CUDA backend: cannot allocate a " + core::shape_string(shape) + " " +
                core::dtype_name(dtype) + " tensor (" + std::to_string(bytes) + " bytes) on " +
                kc::describe_device() + ": " + e.what() +
                "; reduce train.batch_size or the sequence length, or use more tensor-parallel "
                "ranks");
  }
  void* data = buffer->data();
  if (bytes > 0) {
    kc::fill_zero(data, bytes, stream_.get());
    // Zeroed before the tensor is handed out, whichever stream uses it first.
    stream_.synchronize();
  }
  // The release function owns the buffer: freeing it is dropping the last reference.
  auto storage = std::make_shared<core::Storage>(
      data, bytes, core::Device::kCuda,
      [owner = std::move(buffer)](void*) mutable { owner.reset(); });
  return core::Tensor::adopt(std::move(storage), shape, dtype);
}

void CudaBackend::copy_to_device(void* dst, const void* src_host, size_t bytes) {
  if (bytes == 0) return;
  kc::copy_to_device_sync(dst, src_host, bytes, stream_.get());
}
void CudaBackend::copy_to_host(void* dst_host, const void* src, size_t bytes) {
  if (bytes == 0) return;
  kc::copy_to_host_sync(dst_host, src, bytes, stream_.get());
}
void CudaBackend::copy(void* dst, const void* src, size_t bytes) {
  kc::copy_device_to_device(dst, src, bytes, stream_.get());
}
void CudaBackend::fill_zero(void* dst, size_t bytes) {
  if (bytes == 0) return;
  kc::fill_zero(dst, bytes, stream_.get());
}
void CudaBackend::fill(float* x, float value, int64_t n) { kc::fill(x, value, n, stream_.get()); }
void CudaBackend::synchronize() { stream_.synchronize(); }
void CudaBackend::bf16_to_f32(float* dst, const uint16_t* src, int64_t n) {
  timed(&times_.other, [&] { kc::from_bf16(dst, src, n, stream_.get()); });
}
void CudaBackend::f32_to_bf16(uint16_t* dst, const float* src, int64_t n) {
  timed(&times_.other, [&] { kc::to_bf16(dst, src, n, stream_.get()); });
}

// ---- Linear layers ------------------------------------------------------------------------------

const uint16_t* CudaBackend::to_bf16(int slot, const float* x, int64_t n) {
  cuda::DeviceBuffer& buf = bf16_operands_[slot];
  const size_t bytes = static_cast<size_t>(n) * sizeof(uint16_t);
  // cudaFree (the old buffer's) waits for the device, so no queued GEMM still reads it.
  if (buf.bytes() < bytes) buf = cuda::DeviceBuffer(bytes);
  kc::to_bf16(buf.as<uint16_t>(), x, n, stream_.get());
  return buf.as<uint16_t>();
}

const uint16_t* CudaBackend::weight_bf16(const float* weight, int64_t n) {
  if (frozen_ == 0) return to_bf16(2, weight, n);
  cuda::DeviceBuffer& copy = frozen_bf16_[{weight, n}];
  if (copy.bytes() == 0) {
    copy = cuda::DeviceBuffer(static_cast<size_t>(n) * sizeof(uint16_t));
    kc::to_bf16(copy.as<uint16_t>(), weight, n, stream_.get());
  }
  return copy.as<uint16_t>();
}

void CudaBackend::freeze_weights(bool frozen) {
  frozen_ = std::max(0, frozen_ + (frozen ? 1 : -1));
  // cudaFree (in each copy's destructor) waits for the device: no queued GEMM still reads them.
  if (frozen_ == 0) frozen_bf16_.clear();
}
size_t CudaBackend::frozen_copy_bytes() const {
  size_t bytes = 0;
  for (const auto& [key, copy] : frozen_bf16_) bytes += copy.bytes();
  return bytes;
}

void CudaBackend::matmul_forward(float* out, const float* inp, const float* weight,
                                 const float* bias, int64_t N, int64_t C, int64_t OC) {
  timed(&times_.matmul, [&] {
    if (!bf16_matmuls_) {
      return kc::matmul_forward(matmul_, out, inp, weight, bias, N, C, OC, stream_.get());
    }
    kc::matmul_forward_bf16(matmul_, out, to_bf16(0, inp, N * C), weight_bf16(weight, OC * C), bias,
                            N, C, OC, stream_.get());
  });
}
void CudaBackend::matmul_gelu_forward(float* out, float* pre_gelu, const float* inp,
                                      const float* weight, const float* bias, int64_t N, int64_t C,
                                      int64_t OC) {
  if (bf16_matmuls_) {
    matmul_forward(pre_gelu, inp, weight, bias, N, C, OC);
    timed(&times_.gelu, [&] { kc::gelu_forward(out, pre_gelu, N * OC, stream_.get()); });
    return;
  }
  // Fused into the GEMM's epilogue where cuBLASLt can: the time is the matmul's.
  timed(&times_.matmul, [&] {
    kc::matmul_gelu_forward(matmul_, out, pre_gelu, inp, weight, bias, N, C, OC, stream_.get());
  });
}
void CudaBackend::matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                  const float* inp, const float* weight, int64_t N, int64_t C,
                                  int64_t OC) {
  timed(&times_.matmul, [&] {
    if (!bf16_matmuls_) {
      return kc::matmul_backward(matmul_, dinp, dweight, dbias, dout, inp, weight, N, C, OC,
                                 stream_.get());
    }
    kc::matmul_backward_bf16(matmul_, dinp, dweight, dbias, to_bf16(0, dout, N * OC),
                             to_bf16(1, inp, N * C), to_bf16(2, weight, OC * C), N, C, OC,
                             stream_.get());
  });
}

void CudaBackend::matmul_forward(core::Act out, core::ConstAct inp, const float* weight,
                                 const float* bias, int64_t N, int64_t C, int64_t OC) {
  if (!bf16_matmuls_ || inp.is_f32()) {
    return Backend::matmul_forward(out, inp, weight, bias, N, C, OC);
  }
  float* y = result(0, out, N * OC);
  timed(&times_.matmul, [&] {
    kc::matmul_forward_bf16(matmul_, y, inp.bf16(), weight_bf16(weight, OC * C), bias, N, C, OC,
                            stream_.get());
  });
  narrow(out, y, N * OC);
}
void CudaBackend::matmul_gelu_forward(core::Act out, core::Act pre_gelu, core::ConstAct inp,
                                      const float* weight, const float* bias, int64_t N, int64_t C,
                                      int64_t OC) {
  if (!bf16_matmuls_ || inp.is_f32()) {
    return Backend::matmul_gelu_forward(out, pre_gelu, inp, weight, bias, N, C, OC);
  }
  // GELU of the fp32 pre-activation, before either is rounded (as the CPU's reference does).
  float* pre = pre_gelu.is_f32() ? pre_gelu.f32() : wide(1, N * OC);
  timed(&times_.matmul, [&] {
    kc::matmul_forward_bf16(matmul_, pre, inp.bf16(), weight_bf16(weight, OC * C), bias, N, C, OC,
                            stream_.get());
  });
  if (!out.is_f32() && !pre_gelu.is_f32()) {
    timed(&times_.gelu, [&] {
      kc::gelu_forward_split_bf16(out.bf16(), pre_gelu.bf16(), pre, N * OC, stream_.get());
    });
    return;
  }
  float* y = result(0, out, N * OC);
  timed(&times_.gelu, [&] { kc::gelu_forward(y, pre, N * OC, stream_.get()); });
  narrow(pre_gelu, pre, N * OC);
  narrow(out, y, N * OC);
}
void CudaBackend::gelu_backward(float* dinp, core::ConstAct inp, const float* dout, int64_t n) {
  if (inp.is_f32()) return gelu_backward(dinp, inp.f32(), dout, n);
  timed(&times_.gelu,
        [&] { kc::gelu_backward_bf16_input(dinp, inp.bf16(), dout, n, stream_.get()); });
}
void CudaBackend::matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                  core::ConstAct inp, const float* weight, int64_t N, int64_t C,
                                  int64_t OC) {
  if (!bf16_matmuls_ || inp.is_f32()) {
    return Backend::matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC);
  }
  timed(&times_.matmul, [&] {
    kc::matmul_backward_bf16(matmul_, dinp, dweight, dbias, to_bf16(0, dout, N * OC), inp.bf16(),
                             to_bf16(2, weight, OC * C), N, C, OC, stream_.get());
  });
}

void CudaBackend::layernorm_forward(core::Act out, float* mean, float* rstd, core::ConstAct inp,
                                    const float* weight, const float* bias, int64_t N, int64_t C) {
  if (out.is_f32() || inp.is_f32()) {
    return Backend::layernorm_forward(out, mean, rstd, inp, weight, bias, N, C);
  }
  timed(&times_.layernorm, [&] {
    kc::layernorm_forward_bf16(out.bf16(), mean, rstd, inp.bf16(), weight, bias, N, C,
                               stream_.get());
  });
}
void CudaBackend::layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                     core::ConstAct inp, const float* weight, const float* mean,
                                     const float* rstd, int64_t N, int64_t C) {
  if (inp.is_f32()) {
    return layernorm_backward(dinp, dweight, dbias, dout, inp.f32(), weight, mean, rstd, N, C);
  }
  timed(&times_.layernorm, [&] {
    kc::layernorm_backward_bf16_input(dinp, dweight, dbias, dout, inp.bf16(), weight, mean, rstd, N,
                                      C, stream_.get());
  });
}
void CudaBackend::residual_forward(core::Act out, core::ConstAct a, core::ConstAct b, int64_t n) {
  if (out.is_f32() || a.is_f32() || b.is_f32()) return Backend::residual_forward(out, a, b, n);
  timed(&times_.other,
        [&] { kc::residual_forward_bf16(out.bf16(), a.bf16(), b.bf16(), n, stream_.get()); });
}

// ---- Normalisation and activations --------------------------------------------------------------

void CudaBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                                    const float* weight, const float* bias, int64_t N, int64_t C) {
  timed(&times_.layernorm,
        [&] { kc::layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, stream_.get()); });
}
void CudaBackend::layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                     const float* inp, const float* weight, const float* mean,
                                     const float* rstd, int64_t N, int64_t C) {
  timed(&times_.layernorm, [&] {
    kc::layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C,
                           stream_.get());
  });
}
void CudaBackend::gelu_forward(float* out, const float* inp, int64_t n) {
  timed(&times_.gelu, [&] { kc::gelu_forward(out, inp, n, stream_.get()); });
}
void CudaBackend::gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  timed(&times_.gelu, [&] { kc::gelu_backward(dinp, inp, dout, n, stream_.get()); });
}

// ---- Element-wise -------------------------------------------------------------------------------

void CudaBackend::residual_forward(float* out, const float* a, const float* b, int64_t n) {
  timed(&times_.other, [&] { kc::residual_forward(out, a, b, n, stream_.get()); });
}
void CudaBackend::add_inplace(float* acc, const float* x, int64_t n) {
  timed(&times_.other, [&] { kc::add_inplace(acc, x, n, stream_.get()); });
}
void CudaBackend::scale_inplace(float* x, float s, int64_t n) {
  timed(&times_.other, [&] { kc::scale_inplace(x, s, n, stream_.get()); });
}
void CudaBackend::add_bias(float* out, const float* bias, int64_t N, int64_t C) {
  timed(&times_.matmul, [&] { kc::add_bias(out, bias, N, C, stream_.get()); });
}
double CudaBackend::sum_squares(const float* x, int64_t n) {
  auto* base = static_cast<char*>(scratch_.data());
  auto* result = reinterpret_cast<double*>(base + kSumSquaresOffset);
  timed(&times_.other, [&] {
    kc::sum_squares(result, reinterpret_cast<double*>(base + kPartialsOffset), x, n, stream_.get());
  });
  double host = 0;
  kc::copy_to_host_sync(&host, result, sizeof(host), stream_.get());
  return host;
}

// ---- Attention ----------------------------------------------------------------------------------

bool CudaBackend::fused_attention(int64_t C, int64_t NH) const {
  // Sizes the kernels refuse (NH 0, C not a multiple of NH) go to the plain ones, which name them.
  return attention_ == Attention::kFused && NH > 0 && C % NH == 0 &&
         kc::flash_attention_supports(C / NH);
}
void CudaBackend::attention_forward(float* out, float* stats, float* workspace, const float* qkv,
                                    int64_t B, int64_t T, int64_t C, int64_t NH) {
  timed(&times_.attention, [&] {
    if (fused_attention(C, NH)) {
      return kc::flash_attention_forward(out, stats, qkv, B, T, C, NH, stream_.get());
    }
    kc::attention_forward(out, stats, workspace, qkv, B, T, C, NH, stream_.get());
  });
}
void CudaBackend::attention_backward(float* dqkv, float* workspace, const float* dout,
                                     const float* qkv, const float* stats, int64_t B, int64_t T,
                                     int64_t C, int64_t NH) {
  timed(&times_.attention, [&] {
    if (fused_attention(C, NH)) {
      return kc::flash_attention_backward(dqkv, workspace, dout, qkv, stats, B, T, C, NH,
                                          stream_.get());
    }
    kc::attention_backward(dqkv, workspace, dout, qkv, stats, B, T, C, NH, stream_.get());
  });
}
void CudaBackend::attention_forward(core::Act out, float* stats, float* workspace,
                                    core::ConstAct qkv, int64_t B, int64_t T, int64_t C,
                                    int64_t NH) {
  if (out.is_f32() || qkv.is_f32() || !fused_attention(C, NH)) {
    return Backend::attention_forward(out, stats, workspace, qkv, B, T, C, NH);
  }
  timed(&times_.attention, [&] {
    kc::flash_attention_forward_bf16(out.bf16(), stats, qkv.bf16(), B, T, C, NH, stream_.get());
  });
}
void CudaBackend::attention_backward(float* dqkv, float* workspace, const float* dout,
                                     core::ConstAct qkv, const float* stats, int64_t B, int64_t T,
                                     int64_t C, int64_t NH) {
  if (qkv.is_f32() || !fused_attention(C, NH)) {
    return Backend::attention_backward(dqkv, workspace, dout, qkv, stats, B, T, C, NH);
  }
  timed(&times_.attention, [&] {
    kc::flash_attention_backward_bf16(dqkv, workspace, dout, qkv.bf16(), stats, B, T, C, NH,
                                      stream_.get());
  });
}
int64_t CudaBackend::attention_workspace_size(int64_t B, int64_t T, int64_t C, int64_t NH) {
  return fused_attention(C, NH) ? kc::flash_attention_workspace_size(B, T, C, NH)
                                : kc::attention_workspace_size(B, T, C, NH);
}
void CudaBackend::kv_append(float* k_cache, float* v_cache, const float* qkv, const KvPages& pages,
                            const int32_t* slots, const int32_t* positions, int64_t N, int64_t C) {
  timed(&times_.attention, [&] {
    kc::kv_append(k_cache, v_cache, qkv, pages, slots, positions, N, C, stream_.get());
  });
}
void CudaBackend::attention_decode(float* out, const float* qkv, const float* k_cache,
                                   const float* v_cache, const KvPages& pages, const int32_t* slots,
                                   const int32_t* positions, int64_t N, int64_t C, int64_t NH) {
  timed(&times_.attention, [&] {
    kc::attention_decode(out, qkv, k_cache, v_cache, pages, slots, positions, N, C, NH,
                         stream_.get());
  });
}

// ---- Embeddings ---------------------------------------------------------------------------------

void CudaBackend::embedding_forward(float* out, const int32_t* tokens, const float* wte_local,
                                    int64_t N, int64_t C, int64_t vocab_start, int64_t V_local) {
  timed(&times_.embedding, [&] {
    kc::embedding_forward(out, tokens, wte_local, N, C, vocab_start, V_local, stream_.get());
  });
}
void CudaBackend::embedding_backward(float* dwte_local, const float* dout, const int32_t* tokens,
                                     int64_t N, int64_t C, int64_t vocab_start, int64_t V_local) {
  timed(&times_.embedding, [&] {
    kc::embedding_backward(dwte_local, dout, tokens, N, C, vocab_start, V_local, stream_.get());
  });
}
void CudaBackend::positional_forward(float* out, const float* wpe, int64_t B, int64_t T,
                                     int64_t C) {
  timed(&times_.embedding, [&] { kc::positional_forward(out, wpe, B, T, C, stream_.get()); });
}
void CudaBackend::positional_backward(float* dwpe, const float* dout, int64_t B, int64_t T,
                                      int64_t C) {
  timed(&times_.embedding, [&] { kc::positional_backward(dwpe, dout, B, T, C, stream_.get()); });
}
void CudaBackend::positional_rows(float* out, const float* wpe, const int32_t* positions, int64_t N,
                                  int64_t C) {
  timed(&times_.embedding, [&] { kc::positional_rows(out, wpe, positions, N, C, stream_.get()); });
}

// ---- Cross-entropy ------------------------------------------------------------------------------

void CudaBackend::xent_row_max(float* row_max, const float* logits, int64_t N, int64_t n_cols,
                               int64_t ld) {
  timed(&times_.xent, [&] { kc::xent_row_max(row_max, logits, N, n_cols, ld, stream_.get()); });
}
void CudaBackend::xent_row_sumexp_target(float* sumexp, float* target_logit, const float* logits,
                                         const int32_t* targets, const float* row_max, int64_t N,
                                         int64_t n_cols, int64_t ld, int64_t vocab_start) {
  timed(&times_.xent, [&] {
    kc::xent_row_sumexp_target(sumexp, target_logit, logits, targets, row_max, N, n_cols, ld,
                               vocab_start, stream_.get());
  });
}
void CudaBackend::xent_loss(float* losses, const float* row_max, const float* sumexp,
                            const float* target_logit, const int32_t* targets, int64_t N) {
  timed(&times_.xent,
        [&] { kc::xent_loss(losses, row_max, sumexp, target_logit, targets, N, stream_.get()); });
}
void CudaBackend::xent_backward(float* dlogits, const float* logits, const int32_t* targets,
                                const float* row_max, const float* sumexp, const float* dlosses,
                                int64_t N, int64_t n_cols, int64_t ld, int64_t vocab_start) {
  timed(&times_.xent, [&] {
    kc::xent_backward(dlogits, logits, targets, row_max, sumexp, dlosses, N, n_cols, ld,
                      vocab_start, stream_.get());
  });
}
double CudaBackend::sum_losses(const float* losses, const int32_t* targets, int64_t N,
                               int64_t* count) {
  auto* totals = static_cast<char*>(scratch_.data()) + kLossTotalsOffset;
  kc::sum_losses(reinterpret_cast<double*>(totals),
                 reinterpret_cast<int64_t*>(totals + offsetof(LossTotals, count)), losses, targets,
                 N, stream_.get());
  LossTotals host{};
  kc::copy_to_host_sync(&host, totals, sizeof(host), stream_.get());
  if (count) *count = host.count;
  return host.sum;
}

// ---- Optimizer ----------------------------------------------------------------------------------

void CudaBackend::adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                               const AdamWHyper& h, bool decay) {
  // fp32 master weights only: no bf16 working copy through this interface.
  timed(&times_.other,
        [&] { kc::adamw_update(param, grad, m, v, n, h, decay, nullptr, stream_.get()); });
}

// ---- Factory ------------------------------------------------------------------------------------

core::Result<std::unique_ptr<Backend>> make_cuda_backend(int local_rank, int local_size) {
  // No usable GPU: select_device's message names the fix ("use train.device=cpu or run on a GPU
  // node"); passed through unchanged.
  // TESSERA_CUDA_ATTENTION=plain|fused (default fused): the kernels attention trains with, to
  // compare the two (docs/CUDA.md).
  auto attention = CudaBackend::Attention::kFused;
  if (const char* env = std::getenv("TESSERA_CUDA_ATTENTION"); env != nullptr && *env != '\0') {
    const std::string v = env;
    if (v == "plain") {
      attention = CudaBackend::Attention::kPlain;
    } else if (v != "fused") {
      return core::Status::error("TESSERA_CUDA_ATTENTION='" + v +
                                 "' is not a choice; set it to fused or plain, or unset it");
    }
  }
  TESSERA_RETURN_IF_ERROR(kc::select_device(local_rank, local_size));
  try {
    return std::unique_ptr<Backend>(std::make_unique<CudaBackend>(attention));
  } catch (const Error& e) {
    return core::Status::error("train.device=cuda: setting up the CUDA backend on " +
                               kc::describe_device() + " failed: " + e.what() +
                               "; use train.device=cpu or run on a GPU node with free memory");
  }
}

bool cuda_backend_built() { return true; }

}  // namespace tessera::backends
