// CpuBackend: each op forwards to its CPU kernel, timed per kernel family when profiling.
#include "backends/cpu/cpu_backend.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "backends/cpu/adamw.h"
#include "backends/cpu/attention.h"
#include "backends/cpu/attention_decode.h"
#include "backends/cpu/bf16_round.h"
#include "backends/cpu/crossentropy.h"
#include "backends/cpu/embedding.h"
#include "backends/cpu/few_rows_matmul.h"
#include "backends/cpu/gelu.h"
#include "backends/cpu/layernorm.h"
#include "backends/cpu/matmul.h"
#include "backends/cpu/residual.h"
#include "core/error.h"

namespace tessera::backends {

namespace kc = backends::cpu;

namespace {
// bf16 GEMM operands are rounded in blocks of this many rows, so the copies stay small next to the
// operands (the LM head's logits gradient is rows x vocabulary).
constexpr int64_t kBf16Rows = 256;

// Adds the op's wall time to one KernelTimes field when profiling is on.
class Scope {
 public:
  Scope(bool on, double* slot) : slot_(on ? slot : nullptr), t0_(on ? omp_get_wtime() : 0) {}
  ~Scope() {
    if (slot_) *slot_ += omp_get_wtime() - t0_;
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  double* slot_;
  double t0_;
};
}  // namespace

std::string CpuBackend::describe() const {
  return "cpu (OpenBLAS + OpenMP, " + std::to_string(omp_get_max_threads()) + " threads)";
}

core::Tensor CpuBackend::zeros(const core::Shape& shape, core::DType dtype) {
  return core::Tensor::zeros(shape, dtype, core::Device::kCpu);
}
void CpuBackend::copy_to_device(void* dst, const void* src_host, size_t bytes) {
  if (dst != src_host) std::memcpy(dst, src_host, bytes);
}
void CpuBackend::copy_to_host(void* dst_host, const void* src, size_t bytes) {
  if (dst_host != src) std::memcpy(dst_host, src, bytes);
}
void CpuBackend::copy(void* dst, const void* src, size_t bytes) {
  if (dst != src) std::memcpy(dst, src, bytes);
}
void CpuBackend::fill_zero(void* dst, size_t bytes) { std::memset(dst, 0, bytes); }
void CpuBackend::fill(float* x, float value, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = value;
}

void CpuBackend::bf16_to_f32(float* dst, const uint16_t* src, int64_t n) {
  Scope s(profiling_, &times_.other);
  kc::from_bf16(dst, src, n);
}
void CpuBackend::f32_to_bf16(uint16_t* dst, const float* src, int64_t n) {
  Scope s(profiling_, &times_.other);
  kc::to_bf16(dst, src, n);
}

void CpuBackend::set_bf16_matmuls(bool on) {
  // The packed copies hold the weights in the precision they were packed in.
  TESSERA_ASSERT(on == bf16_matmuls_ || frozen_ == 0,
                 "switching bf16 GEMM operands while weights are frozen (packed)");
  bf16_matmuls_ = on;
}

const float* CpuBackend::rounded(int slot, const float* x, int64_t n) {
  std::vector<float>& buf = bf16_scratch_[slot];
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
  kc::round_to_bf16(buf.data(), x, n);
  return buf.data();
}

void CpuBackend::freeze_weights(bool frozen) {
  frozen_ = std::max(0, frozen_ + (frozen ? 1 : -1));
  if (frozen_ == 0) packed_.clear();
}
size_t CpuBackend::frozen_copy_bytes() const {
  size_t bytes = 0;
  for (const auto& [key, packed] : packed_) bytes += packed->bytes();
  return bytes;
}
void CpuBackend::matmul(float* out, const float* inp, const float* weight, const float* bias,
                        int64_t N, int64_t C, int64_t OC) {
  if (frozen_ == 0) return kc::matmul_forward(out, inp, weight, bias, N, C, OC);
  // Frozen: every row count through the packed copy, so a prefill chunk's rows are computed in
  // the decode rows' order too. It is also faster than OpenBLAS's GEMM here, which packs the
  // whole weight on every call: a 64-row 124M prefill step 107 -> 68 ms, still ahead at 1000
  // rows (bench_decode --prefill-reps, docs/PERF.md "Serving").
  auto& packed = packed_[{weight, C, OC}];
  if (!packed) packed = std::make_unique<kc::PackedWeight>(weight, OC, C);
  kc::few_rows_forward(out, inp, *packed, bias, N);
}
void CpuBackend::matmul_forward(float* out, const float* inp, const float* weight,
                                const float* bias, int64_t N, int64_t C, int64_t OC) {
  Scope s(profiling_, &times_.matmul);
  if (!bf16_matmuls_) return matmul(out, inp, weight, bias, N, C, OC);
  if (frozen_ > 0) {
    // Frozen: the packed copy holds the rounded weight (rounded and packed once, keyed by the
    // weight itself); the rows are rounded per call, as unfrozen.
    auto& packed = packed_[{weight, C, OC}];
    if (!packed) packed = std::make_unique<kc::PackedWeight>(rounded(2, weight, OC * C), OC, C);
    for (int64_t r0 = 0; r0 < N; r0 += kBf16Rows) {
      const int64_t rows = std::min(kBf16Rows, N - r0);
      kc::few_rows_forward(out + r0 * OC, rounded(0, inp + r0 * C, rows * C), *packed, bias, rows);
    }
    return;
  }
  const float* w = rounded(2, weight, OC * C);
  for (int64_t r0 = 0; r0 < N; r0 += kBf16Rows) {
    const int64_t rows = std::min(kBf16Rows, N - r0);
    matmul(out + r0 * OC, rounded(0, inp + r0 * C, rows * C), w, bias, rows, C, OC);
  }
}
void CpuBackend::matmul_gelu_forward(float* out, float* pre_gelu, const float* inp,
                                     const float* weight, const float* bias, int64_t N, int64_t C,
                                     int64_t OC) {
  matmul_forward(pre_gelu, inp, weight, bias, N, C, OC);
  Scope s(profiling_, &times_.gelu);
  kc::gelu_forward(out, pre_gelu, N * OC);
}
void CpuBackend::matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                 const float* inp, const float* weight, int64_t N, int64_t C,
                                 int64_t OC) {
  Scope s(profiling_, &times_.matmul);
  if (!bf16_matmuls_) return kc::matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC);
  // Row blocks: dinp's rows are independent, and dweight and dbias accumulate over them.
  const float* w = rounded(2, weight, OC * C);
  for (int64_t r0 = 0; r0 < N; r0 += kBf16Rows) {
    const int64_t rows = std::min(kBf16Rows, N - r0);
    kc::matmul_backward(dinp ? dinp + r0 * C : nullptr, dweight, dbias,
                        rounded(0, dout + r0 * OC, rows * OC), rounded(1, inp + r0 * C, rows * C),
                        w, rows, C, OC);
  }
}

void CpuBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                                   const float* weight, const float* bias, int64_t N, int64_t C) {
  Scope s(profiling_, &times_.layernorm);
  kc::layernorm_forward(out, mean, rstd, inp, weight, bias, N, C);
}
void CpuBackend::layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                    const float* inp, const float* weight, const float* mean,
                                    const float* rstd, int64_t N, int64_t C) {
  Scope s(profiling_, &times_.layernorm);
  kc::layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
}
void CpuBackend::gelu_forward(float* out, const float* inp, int64_t n) {
  Scope s(profiling_, &times_.gelu);
  kc::gelu_forward(out, inp, n);
}
void CpuBackend::gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  Scope s(profiling_, &times_.gelu);
  kc::gelu_backward(dinp, inp, dout, n);
}

void CpuBackend::residual_forward(float* out, const float* a, const float* b, int64_t n) {
  Scope s(profiling_, &times_.other);
  kc::residual_forward(out, a, b, n);
}
void CpuBackend::add_inplace(float* acc, const float* x, int64_t n) {
  Scope s(profiling_, &times_.other);
  kc::add_inplace(acc, x, n);
}
void CpuBackend::scale_inplace(float* x, float scale, int64_t n) {
  Scope s(profiling_, &times_.other);
  kc::scale_inplace(x, scale, n);
}
void CpuBackend::add_bias(float* out, const float* bias, int64_t N, int64_t C) {
  Scope s(profiling_, &times_.matmul);
  kc::add_bias(out, bias, N, C);
}
double CpuBackend::sum_squares(const float* x, int64_t n) {
  Scope s(profiling_, &times_.other);
  return kc::sum_squares(x, n);
}

void CpuBackend::attention_forward(float* out, float* stats, float* workspace, const float* qkv,
                                   int64_t B, int64_t T, int64_t C, int64_t NH) {
  Scope s(profiling_, &times_.attention);
  kc::attention_forward(out, stats, workspace, qkv, B, T, C, NH);
}
void CpuBackend::attention_backward(float* dqkv, float* workspace, const float* dout,
                                    const float* qkv, const float* stats, int64_t B, int64_t T,
                                    int64_t C, int64_t NH) {
  Scope s(profiling_, &times_.attention);
  kc::attention_backward(dqkv, workspace, dout, qkv, stats, B, T, C, NH);
}
int64_t CpuBackend::attention_workspace_size(int64_t B, int64_t T, int64_t C, int64_t NH) {
  return kc::attention_workspace_size(B, T, C, NH);
}
void CpuBackend::kv_append(float* k_cache, float* v_cache, const float* qkv, const KvPages& pages,
                           const int32_t* slots, const int32_t* positions, int64_t N, int64_t C) {
  Scope s(profiling_, &times_.attention);
  kc::kv_append(k_cache, v_cache, qkv, pages, slots, positions, N, C);
}
void CpuBackend::attention_decode(float* out, const float* qkv, const float* k_cache,
                                  const float* v_cache, const KvPages& pages, const int32_t* slots,
                                  const int32_t* positions, int64_t N, int64_t C, int64_t NH) {
  Scope s(profiling_, &times_.attention);
  kc::attention_decode(out, qkv, k_cache, v_cache, pages, slots, positions, N, C, NH);
}

void CpuBackend::embedding_forward(float* out, const int32_t* tokens, const float* wte_local,
                                   int64_t N, int64_t C, int64_t vocab_start, int64_t V_local) {
  Scope s(profiling_, &times_.embedding);
  kc::embedding_forward(out, tokens, wte_local, N, C, vocab_start, V_local);
}
void CpuBackend::embedding_backward(float* dwte_local, const float* dout, const int32_t* tokens,
                                    int64_t N, int64_t C, int64_t vocab_start, int64_t V_local) {
  Scope s(profiling_, &times_.embedding);
  kc::embedding_backward(dwte_local, dout, tokens, N, C, vocab_start, V_local);
}
void CpuBackend::positional_forward(float* out, const float* wpe, int64_t B, int64_t T, int64_t C) {
  Scope s(profiling_, &times_.embedding);
  kc::positional_forward(out, wpe, B, T, C);
}
void CpuBackend::positional_backward(float* dwpe, const float* dout, int64_t B, int64_t T,
                                     int64_t C) {
  Scope s(profiling_, &times_.embedding);
  kc::positional_backward(dwpe, dout, B, T, C);
}
void CpuBackend::positional_rows(float* out, const float* wpe, const int32_t* positions, int64_t N,
                                 int64_t C) {
  Scope s(profiling_, &times_.embedding);
  for (int64_t i = 0; i < N; ++i) kc::add_inplace(out + i * C, wpe + positions[i] * C, C);
}

void CpuBackend::xent_row_max(float* row_max, const float* logits, int64_t N, int64_t n_cols,
                              int64_t ld) {
  Scope s(profiling_, &times_.xent);
  kc::xent_row_max(row_max, logits, N, n_cols, ld);
}
void CpuBackend::xent_row_sumexp_target(float* sumexp, float* target_logit, const float* logits,
                                        const int32_t* targets, const float* row_max, int64_t N,
                                        int64_t n_cols, int64_t ld, int64_t vocab_start) {
  Scope s(profiling_, &times_.xent);
  kc::xent_row_sumexp_target(sumexp, target_logit, logits, targets, row_max, N, n_cols, ld,
                             vocab_start);
}
void CpuBackend::xent_loss(float* losses, const float* row_max, const float* sumexp,
                           const float* target_logit, const int32_t* targets, int64_t N) {
  Scope s(profiling_, &times_.xent);
  kc::xent_loss(losses, row_max, sumexp, target_logit, targets, N);
}
void CpuBackend::xent_backward(float* dlogits, const float* logits, const int32_t* targets,
                               const float* row_max, const float* sumexp, const float* dlosses,
                               int64_t N, int64_t n_cols, int64_t ld, int64_t vocab_start) {
  Scope s(profiling_, &times_.xent);
  kc::xent_backward(dlogits, logits, targets, row_max, sumexp, dlosses, N, n_cols, ld, vocab_start);
}
double CpuBackend::sum_losses(const float* losses, const int32_t* targets, int64_t N,
                              int64_t* count) {
  double sum = 0;
  int64_t n_valid = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] >= 0) {
      sum += losses[n];
      ++n_valid;
    }
  }
  if (count) *count = n_valid;
  return sum;
}

void CpuBackend::adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                              const AdamWHyper& h, bool decay) {
  Scope s(profiling_, &times_.other);
  kc::adamw_update(param, grad, m, v, n, h, decay);
}

}  // namespace tessera::backends
