// Backend: everything a module needs from a device, as one flat interface (in the manner of
// ggml's ggml-backend.h): memory (tensors, host/device copies), ordering (one compute stream,
// synchronize) and the kernel entry points. CpuBackend (BLAS + OpenMP) and CudaBackend (cuBLASLt,
// our .cu kernels) implement it; one is chosen at start-up from `train.device` by make_backend.
// Model, trainer and generator code call only this header: no #ifdef, no stream, no BLAS call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "backends/adamw_hyper.h"
#include "backends/kv_pages.h"
#include "core/act.h"
#include "core/status.h"
#include "core/tensor.h"

namespace tessera::backends {

// Seconds spent per kernel family, filled when profiling is on (bench/ reports them).
struct KernelTimes {
  double matmul = 0, attention = 0, layernorm = 0, gelu = 0, xent = 0, embedding = 0, other = 0;
  double total() const { return matmul + attention + layernorm + gelu + xent + embedding + other; }
};

// Conventions for every op below. Pointers are memory of this backend's device (host memory for
// the CPU backend), fp32 unless a type says otherwise; sizes are elements. Each op's shapes,
// OVERWRITES / ACCUMULATES rules and derivation are those of its kernel twin in
// src/backends/cpu/<op>.h (the CUDA twins keep the same contracts). Ops are queued on the
// backend's compute stream in call order: an op sees every earlier op's result. Only the ops
// documented as returning a host value wait for the device.
//
// Thread-safety: none; one host thread drives a backend. Not copyable.
class Backend {
 public:
  virtual ~Backend() = default;
  Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  virtual core::Device device() const = 0;
  // One line for the log, e.g. "cpu (OpenBLAS, 2 threads)" or "cuda:0 NVIDIA H200 (sm_90, ...)".
  virtual std::string describe() const = 0;

  // ---- Memory ---------------------------------------------------------------------------------
  // A zeroed tensor on this backend's device. Throws tessera::Error when the device cannot hold
  // it (naming the size and the fix). Allocate at start-up only: never inside a step.
  virtual core::Tensor zeros(const core::Shape& shape, core::DType dtype = core::DType::kF32) = 0;
  // Copies of `bytes` between host memory and this device, complete on return (they wait for the
  // compute stream first, so they see every op queued before them).
  virtual void copy_to_device(void* dst, const void* src_host, size_t bytes) = 0;
  virtual void copy_to_host(void* dst_host, const void* src, size_t bytes) = 0;
  // Device-to-device copy and zero fill, queued.
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill_zero(void* dst, size_t bytes) = 0;
  // x (n) = value everywhere, queued.
  virtual void fill(float* x, float value, int64_t n) = 0;
  // The host waits until every queued op has finished.
  virtual void synchronize() = 0;
  // The compute stream as an opaque handle (cudaStream_t for CUDA, nullptr on the CPU), for the
  // one place that must order another stream after it: a device communicator.
  virtual void* stream() const = 0;

  // ---- Linear layers --------------------------------------------------------------------------
  // Serving's promise: while frozen, no weight passed to matmul_forward / matmul_gelu_forward
  // changes, so the backend may keep a copy of each in a layout faster for few-row products (the
  // CPU backend packs a weight into panels at its first use, docs/PERF.md "Serving"). Calls nest
  // (a count); the last freeze_weights(false) drops the copies. Frozen on the CPU backend, a row's
  // result does not depend on how many rows the call has (the same bits as unfrozen up to
  // cpu::kFewRows rows, where both take the few-rows kernel); on CUDA that is not established
  // (cuBLASLt chooses its algorithm by shape: docs/CUDA.md). A no-op by default; CUDA keeps
  // bf16 copies while bf16 GEMM operands are on (below).
  virtual void freeze_weights(bool frozen) { (void)frozen; }
  // Bytes of the copies kept while frozen (0 when none).
  virtual size_t frozen_copy_bytes() const { return 0; }
  // Mixed precision (train.dtype: bf16): while on, matmul_forward, matmul_gelu_forward and
  // matmul_backward take their operands (inp, weight, dout) rounded to bf16 (nearest even) and
  // accumulate the products in fp32; their outputs, the bias, the gradients they accumulate and
  // every other op stay fp32 (master weights, AdamW moments, the gradient arena, attention,
  // layernorm, the loss). A product of two bf16 values is exact in fp32, so the CPU backend's
  // form (rounded copies, then its fp32 GEMM) is the reference for a device's bf16 GEMMs. Set it
  // before the first op and before freeze_weights; frozen, the backends keep the weights' copies
  // rounded (CPU: packed, as fp32 values) or converted (CUDA: bf16), made once each.
  virtual void set_bf16_matmuls(bool on) { bf16_matmuls_ = on; }
  bool bf16_matmuls() const { return bf16_matmuls_; }
  // out (N, OC) = inp (N, C) · weight (OC, C)ᵀ + bias (OC); bias may be null. OVERWRITES out.
  virtual void matmul_forward(float* out, const float* inp, const float* weight, const float* bias,
                              int64_t N, int64_t C, int64_t OC) = 0;
  // The GELU epilogue: pre_gelu (N, OC) = inp · weightᵀ + bias (saved for backward) and
  // out = gelu(pre_gelu), both OVERWRITTEN. Fused into the GEMM where the device can.
  virtual void matmul_gelu_forward(float* out, float* pre_gelu, const float* inp,
                                   const float* weight, const float* bias, int64_t N, int64_t C,
                                   int64_t OC) = 0;
  // dinp (N, C) = dout · weight (OVERWRITES; skipped when null); dweight (OC, C) += doutᵀ · inp;
  // dbias (OC) += column sums of dout (skipped when null).
  virtual void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                               const float* inp, const float* weight, int64_t N, int64_t C,
                               int64_t OC) = 0;

  // ---- Normalisation and activations ----------------------------------------------------------
  virtual void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                                 const float* weight, const float* bias, int64_t N, int64_t C) = 0;
  // dinp ACCUMULATES (the residual stream); dweight, dbias ACCUMULATE.
  virtual void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                  const float* inp, const float* weight, const float* mean,
                                  const float* rstd, int64_t N, int64_t C) = 0;
  virtual void gelu_forward(float* out, const float* inp, int64_t n) = 0;
  // dinp OVERWRITTEN; may alias dout.
  virtual void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) = 0;

  // ---- Element-wise ---------------------------------------------------------------------------
  virtual void residual_forward(float* out, const float* a, const float* b, int64_t n) = 0;
  virtual void add_inplace(float* acc, const float* x, int64_t n) = 0;
  virtual void scale_inplace(float* x, float s, int64_t n) = 0;
  // out (N, C) += bias (C) on every row.
  virtual void add_bias(float* out, const float* bias, int64_t N, int64_t C) = 0;
  // Σ x[i]² in double, returned to the host (waits). Deterministic for a fixed thread count.
  virtual double sum_squares(const float* x, int64_t n) = 0;

  // ---- Attention (training) -------------------------------------------------------------------
  // qkv (B, T, 3C) [q | k | v], heads of HS = C / NH; out (B, T, C); stats (B, NH, T, 2) each
  // query row's softmax statistics [max score, 1 / sum of exponentials], all backward keeps of
  // the probabilities (it recomputes them, as flash attention does: no (T, T) tensor per layer).
  // workspace: attention_workspace_size floats, shared by every layer.
  virtual void attention_forward(float* out, float* stats, float* workspace, const float* qkv,
                                 int64_t B, int64_t T, int64_t C, int64_t NH) = 0;
  // dqkv (B, T, 3C) OVERWRITTEN.
  virtual void attention_backward(float* dqkv, float* workspace, const float* dout,
                                  const float* qkv, const float* stats, int64_t B, int64_t T,
                                  int64_t C, int64_t NH) = 0;
  virtual int64_t attention_workspace_size(int64_t B, int64_t T, int64_t C, int64_t NH) = 0;

  // ---- Attention over a KV cache (generation, serving) ----------------------------------------
  // A cache is paged (kv_pages.h): k and v are (n_blocks, block_size, C), and `pages` maps each
  // slot's positions to blocks. Row i of a decode batch belongs to slot slots[i] at position
  // positions[i] (device int32 arrays of N).
  // kv_append: the cache row of (slots[i], positions[i]) = k of row i, v alike; qkv (N, 3C)
  // [q | k | v]. The row's block must be the slot's own (not shared with another slot).
  virtual void kv_append(float* k_cache, float* v_cache, const float* qkv, const KvPages& pages,
                         const int32_t* slots, const int32_t* positions, int64_t N, int64_t C) = 0;
  // out (N, C) row i = causal attention of row i's q over its slot's positions 0..positions[i]
  // (which kv_append has filled; rows of one slot may share a call in increasing positions, a
  // chunk of prefill). Each row's result does not depend on the other rows (batch invariance),
  // nor on which blocks hold its positions.
  virtual void attention_decode(float* out, const float* qkv, const float* k_cache,
                                const float* v_cache, const KvPages& pages, const int32_t* slots,
                                const int32_t* positions, int64_t N, int64_t C, int64_t NH) = 0;

  // ---- Embeddings -----------------------------------------------------------------------------
  // out (N, C) = rows of wte_local for this rank's tokens, zeros for others' (OVERWRITES).
  virtual void embedding_forward(float* out, const int32_t* tokens, const float* wte_local,
                                 int64_t N, int64_t C, int64_t vocab_start, int64_t V_local) = 0;
  virtual void embedding_backward(float* dwte_local, const float* dout, const int32_t* tokens,
                                  int64_t N, int64_t C, int64_t vocab_start, int64_t V_local) = 0;
  // out (B, T, C) += wpe[t] for every b.
  virtual void positional_forward(float* out, const float* wpe, int64_t B, int64_t T,
                                  int64_t C) = 0;
  virtual void positional_backward(float* dwpe, const float* dout, int64_t B, int64_t T,
                                   int64_t C) = 0;
  // out (N, C) row i += wpe[positions[i]] (decode rows at their own positions).
  virtual void positional_rows(float* out, const float* wpe, const int32_t* positions, int64_t N,
                               int64_t C) = 0;

  // ---- Vocab-parallel cross-entropy (passes; the caller reduces over tp between them) ---------
  virtual void xent_row_max(float* row_max, const float* logits, int64_t N, int64_t n_cols,
                            int64_t ld) = 0;
  virtual void xent_row_sumexp_target(float* sumexp, float* target_logit, const float* logits,
                                      const int32_t* targets, const float* row_max, int64_t N,
                                      int64_t n_cols, int64_t ld, int64_t vocab_start) = 0;
  virtual void xent_loss(float* losses, const float* row_max, const float* sumexp,
                         const float* target_logit, const int32_t* targets, int64_t N) = 0;
  // dlogits may be logits itself (in place: the model's head does so).
  virtual void xent_backward(float* dlogits, const float* logits, const int32_t* targets,
                             const float* row_max, const float* sumexp, const float* dlosses,
                             int64_t N, int64_t n_cols, int64_t ld, int64_t vocab_start) = 0;
  // Σ losses[n] over targets[n] >= 0 (in double, rows in order) and the count of such rows,
  // returned to the host (waits).
  virtual double sum_losses(const float* losses, const int32_t* targets, int64_t N,
                            int64_t* count) = 0;

  // ---- Optimizer ------------------------------------------------------------------------------
  // One AdamW step over n elements (backends/adamw_hyper.h has the update and its order).
  virtual void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                            const AdamWHyper& h, bool decay) = 0;

  // ---- Precision conversion -------------------------------------------------------------------
  // dst (n) = src's bf16 values as fp32 (exact). OVERWRITES dst. Queued.
  virtual void bf16_to_f32(float* dst, const uint16_t* src, int64_t n) = 0;
  // dst (n) = src rounded to bf16 (core::to_bf16's bits: nearest, ties to even). Queued.
  virtual void f32_to_bf16(uint16_t* dst, const float* src, int64_t n) = 0;

  // ---- Ops on activations of either precision (train.dtype: bf16) ------------------------------
  // The same ops as above with their activation arguments as core::Act / ConstAct, fp32 or bf16
  // (a training model's activations are bf16 under train.dtype: bf16; gradients, statistics,
  // parameters and logits stay fp32). Each computes in fp32: a bf16 input is read exactly (into
  // fp32 scratch), the fp32 op runs, and a bf16 output gets its result rounded to the nearest
  // bf16. With every argument fp32 they are the fp32 ops themselves. Contracts as above. The
  // scratch is this backend's (reserve_activation_scratch; grown at first use otherwise). The
  // virtual ones a backend may do natively, with the same result: its bf16 GEMMs take bf16
  // inputs as they are (rounding a bf16 value to bf16 changes nothing), and a bf16 kernel that
  // computes in fp32 and rounds once replaces the widen / fp32 op / round passes.
  void convert(core::Act dst, core::ConstAct src, int64_t n);
  virtual void matmul_forward(core::Act out, core::ConstAct inp, const float* weight,
                              const float* bias, int64_t N, int64_t C, int64_t OC);
  virtual void matmul_gelu_forward(core::Act out, core::Act pre_gelu, core::ConstAct inp,
                                   const float* weight, const float* bias, int64_t N, int64_t C,
                                   int64_t OC);
  virtual void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                               core::ConstAct inp, const float* weight, int64_t N, int64_t C,
                               int64_t OC);
  virtual void layernorm_forward(core::Act out, float* mean, float* rstd, core::ConstAct inp,
                                 const float* weight, const float* bias, int64_t N, int64_t C);
  virtual void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                  core::ConstAct inp, const float* weight, const float* mean,
                                  const float* rstd, int64_t N, int64_t C);
  virtual void gelu_backward(float* dinp, core::ConstAct inp, const float* dout, int64_t n);
  virtual void residual_forward(core::Act out, core::ConstAct a, core::ConstAct b, int64_t n);
  void add_bias(core::Act out, const float* bias, int64_t N, int64_t C);
  virtual void attention_forward(core::Act out, float* stats, float* workspace, core::ConstAct qkv,
                                 int64_t B, int64_t T, int64_t C, int64_t NH);
  virtual void attention_backward(float* dqkv, float* workspace, const float* dout,
                                  core::ConstAct qkv, const float* stats, int64_t B, int64_t T,
                                  int64_t C, int64_t NH);
  void embedding_forward(core::Act out, const int32_t* tokens, const float* wte_local, int64_t N,
                         int64_t C, int64_t vocab_start, int64_t V_local);
  void positional_forward(core::Act out, const float* wpe, int64_t B, int64_t T, int64_t C);
  // Sizes the fp32 scratch of the ops above for arguments of up to n elements (three of them),
  // so that no step allocates it. A model with bf16 activations calls it when built.
  void reserve_activation_scratch(int64_t n);
  // Bytes of that scratch (0 until an op or a reserve needed it).
  size_t activation_scratch_bytes() const;

  // ---- Profiling ------------------------------------------------------------------------------
  // When on, each op adds its wall time to kernel_times() (the CUDA backend synchronises around
  // each op to do so; off by default).
  void set_profiling(bool on) { profiling_ = on; }
  bool profiling() const { return profiling_; }
  KernelTimes& kernel_times() { return times_; }

 protected:
  bool profiling_ = false;
  bool bf16_matmuls_ = false;
  KernelTimes times_;

  // fp32 scratch slot `slot` (0, 1, 2) of the Act ops, holding at least n elements.
  float* wide(int slot, int64_t n);
  // x's values as fp32: x itself when fp32, else widened into slot `slot`.
  const float* widen(int slot, core::ConstAct x, int64_t n);
  // Where an op writes the fp32 result for x: x itself when fp32, else slot `slot`
  // (uninitialised); narrow() then stores it into x.
  float* result(int slot, core::Act x, int64_t n);
  void narrow(core::Act x, const float* result, int64_t n);

 private:
  core::Tensor wide_[3];
};

// The backend named by `device` ("cpu" or "cuda") for a process that is local rank local_rank
// of local_size on its node (the CUDA backend takes GPU local_rank % device_count). Errors name
// the value and the fix: an unknown name; "cuda" in a build without the CUDA backend; "cuda" on
// a machine with no usable GPU. `option` is how the caller's user spelled the choice (the
// trainer's config key, or an app's flag such as "--device"): the messages name it.
core::Result<std::unique_ptr<Backend>> make_backend(const std::string& device, int local_rank,
                                                    int local_size,
                                                    const std::string& option = "train.device");

// The process's CPU backend (host memory); the default of code that is given no backend.
Backend& cpu_backend();

}  // namespace tessera::backends
