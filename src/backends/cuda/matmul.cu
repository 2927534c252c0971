// Fully connected layer through cuBLASLt: every GEMM is one cublasLtMatmul; only the bias
// reduction of backward (and the fallbacks for epilogues cuBLASLt refuses) are our kernels.
//
// Row-major <-> column-major. cuBLASLt reads column-major matrices; ours are row-major. The same
// bytes read as a row-major (R, K) matrix X or as a column-major (K, R) matrix are X and Xᵀ, with
// leading dimension K either way. So every row-major product Y = P · Q is issued as the
// column-major product Yᵀ = Qᵀ · Pᵀ, whose operands are our buffers as they lie; "N" below means
// cuBLASLt takes a buffer as it reads it, "T" that it transposes it. m, n, k are cuBLASLt's
// (D is m x n column-major, k the reduced dimension).
//   forward   out (N,OC) = inp · Wᵀ      ->  outᵀ (OC,N) = W · inpᵀ
//             A = weight read as Wᵀ (C,OC): op T, lda C;  B = inp read as inpᵀ (C,N): op N, ldb C;
//             m = OC, n = N, k = C, ldd = OC. The bias (OC) runs along D's rows, as cuBLASLt's
//             BIAS epilogue wants (one value per row of D, broadcast over its columns).
//   dinp      dinp (N,C) = dout · W      ->  dinpᵀ (C,N) = Wᵀ · doutᵀ
//             A = weight read as Wᵀ (C,OC): op N, lda C;  B = dout read as doutᵀ (OC,N): op N,
//             ldb OC;  m = C, n = N, k = OC, ldd = C.
//   dweight   dW (OC,C) += doutᵀ · inp   ->  dWᵀ (C,OC) += inpᵀ · dout
//             A = inp read as inpᵀ (C,N): op N, lda C;  B = dout read as doutᵀ (OC,N): op T,
//             ldb OC;  m = C, n = OC, k = N, ldd = C, beta = 1 with C = D (in place).
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <memory>
#include <type_traits>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/matmul.h"

namespace tessera::backends::cuda {

struct MatmulContext::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  int64_t epilogue_fallbacks = 0;
};

MatmulContext::MatmulContext(size_t workspace_bytes) : impl_(std::make_unique<Impl>()) {
  TESSERA_CUBLAS_CHECK(cublasLtCreate(&impl_->handle), "creating the cuBLASLt handle");
  if (workspace_bytes > 0) {
    const cudaError_t rc = cudaMalloc(&impl_->workspace, workspace_bytes);
    if (rc != cudaSuccess) {
      cublasLtDestroy(impl_->handle);  // the destructor will not run: the constructor throws
      TESSERA_CUDA_CHECK(rc, "allocating the cuBLASLt workspace");
    }
  }
  impl_->workspace_bytes = workspace_bytes;
}

MatmulContext::~MatmulContext() {
  // No checks here: a destructor must not throw, and a failure to free changes nothing now.
  cudaFree(impl_->workspace);
  cublasLtDestroy(impl_->handle);
}

size_t MatmulContext::workspace_bytes() const { return impl_->workspace_bytes; }
int64_t MatmulContext::epilogue_fallbacks() const { return impl_->epilogue_fallbacks; }

namespace {

// ---- Element types ------------------------------------------------------------------------------

// Our headers carry bf16 as its bits (uint16_t); inside kernels it is __nv_bfloat16.
template <typename T>
struct DeviceType {
  using type = T;
};
template <>
struct DeviceType<uint16_t> {
  using type = __nv_bfloat16;
};

template <typename T>
constexpr cudaDataType_t data_type() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, uint16_t>, "fp32 or bf16 bits");
  return std::is_same_v<T, float> ? CUDA_R_32F : CUDA_R_16BF;
}

__device__ inline float to_float(float x) { return x; }
__device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ inline T from_float(float x);
template <>
__device__ inline float from_float<float>(float x) {
  return x;
}
template <>
__device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// ---- Our kernels --------------------------------------------------------------------------------

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride loops cover the rest

int grid_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

// out (N, OC) = bias broadcast over rows: the seed of a beta = 1 GEMM when the BIAS epilogue is
// refused (as the CPU twin does it).
template <typename T>
__global__ void broadcast_rows_kernel(T* out, const T* bias, int64_t N, int64_t OC) {
  const int64_t total = N * OC;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = bias[i % OC];
  }
}

// out (n) = gelu(inp (n)), tanh form as backends/cpu/gelu.h: 0.5 · x · (1 + tanh(sqrt(2/pi) ·
// (x + 0.044715 x³))), evaluated in fp32 with the accurate tanhf.
template <typename T>
__global__ void gelu_kernel(T* out, const T* inp, int64_t n) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  constexpr float kCubic = 0.044715f;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = to_float(inp[i]);
    const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
    out[i] = from_float<T>(0.5f * x * (1.0f + tanhf(u)));
  }
}

// dbias (OC) += sum over n of dout (N, OC), summed in fp32. A block owns kBiasCols columns; its
// kBiasRows thread rows stride down the rows (thread row r takes rows r, r + kBiasRows, ...),
// then one thread per column adds the kBiasRows partial sums in order. No atomics, so the
// order, and with it every bit of the result, is fixed.
constexpr int kBiasCols = 32;
constexpr int kBiasRows = 32;

template <typename T>
__global__ void bias_grad_kernel(float* dbias, const T* dout, int64_t N, int64_t OC) {
  __shared__ float partial[kBiasRows][kBiasCols + 1];  // +1: no bank conflicts on the column read
  const int64_t o = blockIdx.x * static_cast<int64_t>(kBiasCols) + threadIdx.x;
  float acc = 0.0f;
  if (o < OC) {
    for (int64_t n = threadIdx.y; n < N; n += kBiasRows) acc += to_float(dout[n * OC + o]);
  }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && o < OC) {
    float sum = 0.0f;
    for (int r = 0; r < kBiasRows; ++r) sum += partial[r][threadIdx.x];
    dbias[o] += sum;
  }
}

// ---- cuBLASLt -----------------------------------------------------------------------------------

// Owners of cuBLASLt descriptors, so a throw in between leaks none.
template <typename Handle, cublasStatus_t (*Destroy)(Handle)>
struct LtDeleter {
  void operator()(Handle h) const { Destroy(h); }
};
using MatmulDesc = std::unique_ptr<std::remove_pointer_t<cublasLtMatmulDesc_t>,
                                   LtDeleter<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>>;
using Layout = std::unique_ptr<std::remove_pointer_t<cublasLtMatrixLayout_t>,
                               LtDeleter<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>>;
using Preference =
    std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>,
                    LtDeleter<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>>;

Layout make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
  cublasLtMatrixLayout_t raw = nullptr;
  TESSERA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&raw, type, static_cast<uint64_t>(rows),
                                                  static_cast<uint64_t>(cols), ld),
                       "creating a cuBLASLt matrix layout");
  return Layout(raw);
}

template <typename V>
void set_attribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute,
                   const V& value) {
  TESSERA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)),
                       "setting a cuBLASLt matmul attribute");
}

// One column-major GEMM D (m x n) = op(A) · op(B) + beta · D (C is D: in place), with A and B of
// one type, fp32 compute and scale, and an optional epilogue. The mapping from our row-major
// tensors is in the file comment.
struct Gemm {
  cublasOperation_t transa = CUBLAS_OP_N;
  cublasOperation_t transb = CUBLAS_OP_N;
  int64_t m = 0, n = 0, k = 0;
  cudaDataType_t ab_type = CUDA_R_32F;
  const void* a = nullptr;
  int64_t lda = 0;
  const void* b = nullptr;
  int64_t ldb = 0;
  cudaDataType_t d_type = CUDA_R_32F;
  void* d = nullptr;
  int64_t ldd = 0;
  float beta = 0.0f;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;  // of d_type, length m (BIAS, GELU_AUX_BIAS)
  void* aux = nullptr;         // of d_type, m x n with leading dimension aux_ld (GELU_AUX*)
  int64_t aux_ld = 0;
};

// Runs `g`. Returns false, having queued nothing, when cuBLASLt has no algorithm for it (which
// happens for fused epilogues at some sizes and alignments: the caller falls back); throws on any
// other failure.
bool run_gemm(MatmulContext::Impl& ctx, const Gemm& g, Stream stream) {
  cublasLtMatmulDesc_t raw_desc = nullptr;
  TESSERA_CUBLAS_CHECK(cublasLtMatmulDescCreate(&raw_desc, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                       "creating a cuBLASLt matmul descriptor");
  const MatmulDesc desc(raw_desc);
  set_attribute(raw_desc, CUBLASLT_MATMUL_DESC_TRANSA, g.transa);
  set_attribute(raw_desc, CUBLASLT_MATMUL_DESC_TRANSB, g.transb);
  set_attribute(raw_desc, CUBLASLT_MATMUL_DESC_EPILOGUE, g.epilogue);
  if (g.bias != nullptr) {
    set_attribute(raw_desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias);
    set_attribute(raw_desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, static_cast<int32_t>(g.d_type));
  }
  if (g.aux != nullptr) {
    set_attribute(raw_desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, g.aux);
    set_attribute(raw_desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, g.aux_ld);
  }
  // Stored shapes: op(A) is m x k, so A is stored m x k (N) or k x m (T); likewise B.
  const bool ta = g.transa != CUBLAS_OP_N;
  const bool tb = g.transb != CUBLAS_OP_N;
  const Layout a_layout = make_layout(g.ab_type, ta ? g.k : g.m, ta ? g.m : g.k, g.lda);
  const Layout b_layout = make_layout(g.ab_type, tb ? g.n : g.k, tb ? g.k : g.n, g.ldb);
  const Layout d_layout = make_layout(g.d_type, g.m, g.n, g.ldd);

  cublasLtMatmulPreference_t raw_pref = nullptr;
  TESSERA_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&raw_pref),
                       "creating a cuBLASLt matmul preference");
  const Preference pref(raw_pref);
  const uint64_t workspace_bytes = ctx.workspace_bytes;
  TESSERA_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(raw_pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                           &workspace_bytes, sizeof(workspace_bytes)),
      "setting the cuBLASLt workspace limit");

  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  const cublasStatus_t rc = cublasLtMatmulAlgoGetHeuristic(
      ctx.handle, raw_desc, a_layout.get(), b_layout.get(), d_layout.get(), d_layout.get(),
      raw_pref, 1, &heuristic, &found);
  const bool fused = g.epilogue != CUBLASLT_EPILOGUE_DEFAULT;
  // A fused epilogue cuBLASLt cannot do for these types, sizes or pointers is refused with
  // NOT_SUPPORTED (or INVALID_VALUE for some attribute combinations), or with no algorithm.
  const bool refused = rc == CUBLAS_STATUS_NOT_SUPPORTED || rc == CUBLAS_STATUS_INVALID_VALUE;
  if (fused && (refused || (rc == CUBLAS_STATUS_SUCCESS && found == 0))) return false;
  TESSERA_CUBLAS_CHECK(rc, "asking cuBLASLt for a GEMM algorithm");
  if (found == 0) {
    TESSERA_CUBLAS_CHECK(CUBLAS_STATUS_NOT_SUPPORTED,
                         "finding a cuBLASLt algorithm for a plain GEMM (none offered)");
  }

  const float alpha = 1.0f;
  const float beta = g.beta;
  const cublasStatus_t run_rc =
      cublasLtMatmul(ctx.handle, raw_desc, &alpha, g.a, a_layout.get(), g.b, b_layout.get(), &beta,
                     g.d, d_layout.get(), g.d, d_layout.get(), &heuristic.algo, ctx.workspace,
                     ctx.workspace_bytes, stream);
  if (fused && (run_rc == CUBLAS_STATUS_NOT_SUPPORTED || run_rc == CUBLAS_STATUS_INVALID_VALUE)) {
    return false;  // refused before anything was queued
  }
  TESSERA_CUBLAS_CHECK(run_rc, "running a cuBLASLt GEMM");
  return true;
}

void check_sizes(int64_t N, int64_t C, int64_t OC) {
  TESSERA_ASSERT(N >= 0 && C >= 1 && OC >= 0, "matmul (CUDA): need N >= 0, C >= 1, OC >= 0");
}

// The operands of out (N, OC) = inp · weightᵀ, the forward GEMM of the file comment; no bias,
// no epilogue.
template <typename TOut, typename TIn>
Gemm forward_operands(TOut* out, const TIn* inp, const TIn* weight, int64_t N, int64_t C,
                      int64_t OC) {
  Gemm g;
  g.transa = CUBLAS_OP_T;
  g.transb = CUBLAS_OP_N;
  g.m = OC;
  g.n = N;
  g.k = C;
  g.ab_type = data_type<TIn>();
  g.a = weight;
  g.lda = C;
  g.b = inp;
  g.ldb = C;
  g.d_type = data_type<TOut>();
  g.d = out;
  g.ldd = OC;
  return g;
}

// out (N, OC) = inp · weightᵀ (+ bias).
template <typename TOut, typename TIn>
void forward_gemm(MatmulContext& ctx, TOut* out, const TIn* inp, const TIn* weight,
                  const TOut* bias, int64_t N, int64_t C, int64_t OC, Stream stream) {
  Gemm g = forward_operands(out, inp, weight, N, C, OC);
  if (bias != nullptr) {
    g.epilogue = CUBLASLT_EPILOGUE_BIAS;
    g.bias = bias;
    if (run_gemm(ctx.impl(), g, stream)) return;
    // No BIAS epilogue here: seed out with the bias and let the GEMM add onto it.
    ++ctx.impl().epilogue_fallbacks;
    using D = typename DeviceType<TOut>::type;
    broadcast_rows_kernel<<<grid_for(N * OC), kThreads, 0, stream>>>(
        reinterpret_cast<D*>(out), reinterpret_cast<const D*>(bias), N, OC);
    TESSERA_CUDA_LAUNCH_CHECK("broadcasting the matmul bias");
    g.epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    g.bias = nullptr;
    g.beta = 1.0f;
  }
  run_gemm(ctx.impl(), g, stream);
}

template <typename T>
void gelu_forward_impl(MatmulContext& ctx, T* out, T* pre_gelu, const T* inp, const T* weight,
                       const T* bias, int64_t N, int64_t C, int64_t OC, Stream stream) {
  check_sizes(N, C, OC);
  if (N == 0 || OC == 0) return;
  // cuBLASLt's rules for the GELU input matrix: leading dimension a multiple of 8; we also ask
  // for a 16-byte aligned pointer rather than learn its alignment rule the hard way.
  const bool fusable = OC % 8 == 0 && reinterpret_cast<uintptr_t>(pre_gelu) % 16 == 0;
  if (fusable) {
    Gemm g = forward_operands(out, inp, weight, N, C, OC);
    g.epilogue = bias != nullptr ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    g.bias = bias;
    g.aux = pre_gelu;
    g.aux_ld = OC;  // pre_gelu is D-shaped: (OC, N) column-major, i.e. our (N, OC) row-major
    if (run_gemm(ctx.impl(), g, stream)) return;
  }
  ++ctx.impl().epilogue_fallbacks;
  forward_gemm(ctx, pre_gelu, inp, weight, bias, N, C, OC, stream);
  using D = typename DeviceType<T>::type;
  gelu_kernel<<<grid_for(N * OC), kThreads, 0, stream>>>(
      reinterpret_cast<D*>(out), reinterpret_cast<const D*>(pre_gelu), N * OC);
  TESSERA_CUDA_LAUNCH_CHECK("applying gelu after the matmul");
}

template <typename TDinp, typename TIn>
void backward_impl(MatmulContext& ctx, TDinp* dinp, float* dweight, float* dbias, const TIn* dout,
                   const TIn* inp, const TIn* weight, int64_t N, int64_t C, int64_t OC,
                   Stream stream) {
  check_sizes(N, C, OC);
  if (dinp != nullptr && N > 0) {
    if (OC == 0) {
      TESSERA_CUDA_CHECK(cudaMemsetAsync(dinp, 0, N * C * sizeof(TDinp), stream),
                         "zeroing dinp of a matmul with no outputs");
    } else {
      Gemm g;  // dinpᵀ (C, N) = Wᵀ · doutᵀ
      g.m = C;
      g.n = N;
      g.k = OC;
      g.ab_type = data_type<TIn>();
      g.a = weight;
      g.lda = C;
      g.b = dout;
      g.ldb = OC;
      g.d_type = data_type<TDinp>();
      g.d = dinp;
      g.ldd = C;
      run_gemm(ctx.impl(), g, stream);
    }
  }
  if (N == 0 || OC == 0) return;  // nothing to add to dweight or dbias
  {
    Gemm g;  // dWᵀ (C, OC) += inpᵀ · dout
    g.transa = CUBLAS_OP_N;
    g.transb = CUBLAS_OP_T;
    g.m = C;
    g.n = OC;
    g.k = N;
    g.ab_type = data_type<TIn>();
    g.a = inp;
    g.lda = C;
    g.b = dout;
    g.ldb = OC;
    g.d_type = CUDA_R_32F;
    g.d = dweight;
    g.ldd = C;
    g.beta = 1.0f;
    run_gemm(ctx.impl(), g, stream);
  }
  if (dbias != nullptr) {
    using D = typename DeviceType<TIn>::type;
    const dim3 block(kBiasCols, kBiasRows);
    const dim3 grid(static_cast<unsigned>((OC + kBiasCols - 1) / kBiasCols));
    bias_grad_kernel<<<grid, block, 0, stream>>>(dbias, reinterpret_cast<const D*>(dout), N, OC);
    TESSERA_CUDA_LAUNCH_CHECK("summing the matmul bias gradient");
  }
}

template <typename TOut, typename TIn>
void forward_impl(MatmulContext& ctx, TOut* out, const TIn* inp, const TIn* weight,
                  const TOut* bias, int64_t N, int64_t C, int64_t OC, Stream stream) {
  check_sizes(N, C, OC);
  if (N == 0 || OC == 0) return;
  forward_gemm(ctx, out, inp, weight, bias, N, C, OC, stream);
}

}  // namespace

void matmul_forward(MatmulContext& ctx, float* out, const float* inp, const float* weight,
                    const float* bias, int64_t N, int64_t C, int64_t OC, Stream stream) {
  forward_impl(ctx, out, inp, weight, bias, N, C, OC, stream);
}

void matmul_forward_bf16(MatmulContext& ctx, uint16_t* out, const uint16_t* inp,
                         const uint16_t* weight, const uint16_t* bias, int64_t N, int64_t C,
                         int64_t OC, Stream stream) {
  forward_impl(ctx, out, inp, weight, bias, N, C, OC, stream);
}

void matmul_forward_bf16(MatmulContext& ctx, float* out, const uint16_t* inp,
                         const uint16_t* weight, const float* bias, int64_t N, int64_t C,
                         int64_t OC, Stream stream) {
  forward_impl(ctx, out, inp, weight, bias, N, C, OC, stream);
}

void matmul_gelu_forward(MatmulContext& ctx, float* out, float* pre_gelu, const float* inp,
                         const float* weight, const float* bias, int64_t N, int64_t C, int64_t OC,
                         Stream stream) {
  gelu_forward_impl(ctx, out, pre_gelu, inp, weight, bias, N, C, OC, stream);
}

void matmul_gelu_forward_bf16(MatmulContext& ctx, uint16_t* out, uint16_t* pre_gelu,
                              const uint16_t* inp, const uint16_t* weight, const uint16_t* bias,
                              int64_t N, int64_t C, int64_t OC, Stream stream) {
  gelu_forward_impl(ctx, out, pre_gelu, inp, weight, bias, N, C, OC, stream);
}

void matmul_backward(MatmulContext& ctx, float* dinp, float* dweight, float* dbias,
                     const float* dout, const float* inp, const float* weight, int64_t N, int64_t C,
                     int64_t OC, Stream stream) {
  backward_impl(ctx, dinp, dweight, dbias, dout, inp, weight, N, C, OC, stream);
}

void matmul_backward_bf16(MatmulContext& ctx, uint16_t* dinp, float* dweight, float* dbias,
                          const uint16_t* dout, const uint16_t* inp, const uint16_t* weight,
                          int64_t N, int64_t C, int64_t OC, Stream stream) {
  backward_impl(ctx, dinp, dweight, dbias, dout, inp, weight, N, C, OC, stream);
}

void matmul_backward_bf16(MatmulContext& ctx, float* dinp, float* dweight, float* dbias,
                          const uint16_t* dout, const uint16_t* inp, const uint16_t* weight,
                          int64_t N, int64_t C, int64_t OC, Stream stream) {
  backward_impl(ctx, dinp, dweight, dbias, dout, inp, weight, N, C, OC, stream);
}

}  // namespace tessera::backends::cuda
