// Fused causal attention: the launchers and their checks. The kernels, and how they split the
// work, are in flash_attention_kernels.cuh.
#include <cmath>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/flash_attention.h"
#include "backends/cuda/flash_attention_kernels.cuh"

namespace tessera::backends::cuda {
namespace {

using flash::kRowsPerBlock;
using flash::kThreads;

void check_sizes(int64_t B, int64_t T, int64_t C, int64_t NH) {
  TESSERA_ASSERT(B > 0 && T > 0 && C > 0 && NH > 0, "flash attention: sizes must be positive");
  TESSERA_ASSERT(C % NH == 0, "flash attention: channels C must split evenly over NH heads");
  TESSERA_ASSERT(flash_attention_supports(C / NH),
                 "flash attention: head size C / NH must be 32, 64 or 128");
  TESSERA_ASSERT(B * NH < 65536, "flash attention: B * NH exceeds the grid's y dimension");
  TESSERA_ASSERT(T < INT32_MAX, "flash attention: T exceeds the grid");
}

dim3 grid_of(int64_t B, int64_t T, int64_t NH) {
  return dim3(static_cast<unsigned>((T + kRowsPerBlock - 1) / kRowsPerBlock),
              static_cast<unsigned>(B * NH));
}

template <int HS, typename In, typename Out>
void forward_hs(Out* out, float* stats, const In* qkv, int64_t B, int64_t T, int64_t C, int64_t NH,
                float scale, Stream stream) {
  flash::flash_forward_kernel<HS, In, Out>
      <<<grid_of(B, T, NH), kThreads, 0, stream>>>(out, stats, qkv, T, C, NH, scale);
  TESSERA_CUDA_LAUNCH_CHECK("launching flash_forward_kernel");
}

template <int HS, typename In>
void backward_hs(float* dqkv, float* d_rows, const float* dout, const In* qkv, const float* stats,
                 int64_t B, int64_t T, int64_t C, int64_t NH, float scale, Stream stream) {
  flash::flash_backward_query_kernel<HS, In>
      <<<grid_of(B, T, NH), kThreads, 0, stream>>>(dqkv, d_rows, dout, qkv, stats, T, C, NH, scale);
  TESSERA_CUDA_LAUNCH_CHECK("launching flash_backward_query_kernel");
  flash::flash_backward_key_value_kernel<HS, In>
      <<<grid_of(B, T, NH), kThreads, 0, stream>>>(dqkv, d_rows, dout, qkv, stats, T, C, NH, scale);
  TESSERA_CUDA_LAUNCH_CHECK("launching flash_backward_key_value_kernel");
}

// The head size's instantiation, for fp32 or bf16 activations.
template <typename In, typename Out>
void forward(Out* out, float* stats, const In* qkv, int64_t B, int64_t T, int64_t C, int64_t NH,
             Stream stream) {
  check_sizes(B, T, C, NH);
  const int64_t HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  switch (HS) {
    case 32:
      return forward_hs<32>(out, stats, qkv, B, T, C, NH, scale, stream);
    case 64:
      return forward_hs<64>(out, stats, qkv, B, T, C, NH, scale, stream);
    default:
      return forward_hs<128>(out, stats, qkv, B, T, C, NH, scale, stream);
  }
}

template <typename In>
void backward(float* dqkv, float* workspace, const float* dout, const In* qkv, const float* stats,
              int64_t B, int64_t T, int64_t C, int64_t NH, Stream stream) {
  check_sizes(B, T, C, NH);
  const int64_t HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  switch (HS) {
    case 32:
      return backward_hs<32>(dqkv, workspace, dout, qkv, stats, B, T, C, NH, scale, stream);
    case 64:
      return backward_hs<64>(dqkv, workspace, dout, qkv, stats, B, T, C, NH, scale, stream);
    default:
      return backward_hs<128>(dqkv, workspace, dout, qkv, stats, B, T, C, NH, scale, stream);
  }
}

}  // namespace

bool flash_attention_supports(int64_t HS) { return HS == 32 || HS == 64 || HS == 128; }

int64_t flash_attention_workspace_size(int64_t B, int64_t T, int64_t /*C*/, int64_t NH) {
  return B * NH * T;
}

void flash_attention_forward(float* out, float* stats, const float* qkv, int64_t B, int64_t T,
                             int64_t C, int64_t NH, Stream stream) {
  forward(out, stats, qkv, B, T, C, NH, stream);
}

void flash_attention_forward_bf16(uint16_t* out, float* stats, const uint16_t* qkv, int64_t B,
                                  int64_t T, int64_t C, int64_t NH, Stream stream) {
  forward(out, stats, qkv, B, T, C, NH, stream);
}

void flash_attention_backward(float* dqkv, float* workspace, const float* dout, const float* qkv,
                              const float* stats, int64_t B, int64_t T, int64_t C, int64_t NH,
                              Stream stream) {
  backward(dqkv, workspace, dout, qkv, stats, B, T, C, NH, stream);
}

void flash_attention_backward_bf16(float* dqkv, float* workspace, const float* dout,
                                   const uint16_t* qkv, const float* stats, int64_t B, int64_t T,
                                   int64_t C, int64_t NH, Stream stream) {
  backward(dqkv, workspace, dout, qkv, stats, B, T, C, NH, stream);
}

}  // namespace tessera::backends::cuda
