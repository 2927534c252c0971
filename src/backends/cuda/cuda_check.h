// The CUDA members of the check-macro family (src/core/error.h): TESSERA_CUDA_CHECK,
// TESSERA_CUBLAS_CHECK, TESSERA_CUDNN_CHECK, TESSERA_NCCL_CHECK, each built on TESSERA_CHECK_GEN so
// a failure throws tessera::Error naming what we were doing, the call, the rank, file:line and the
// library's own string. TESSERA_CUDA_LAUNCH_CHECK follows every kernel launch.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <nccl.h>

#include <string>

#include "core/error.h"

namespace tessera::backends::cuda {
std::string cublas_status_string(cublasStatus_t status);
}  // namespace tessera::backends::cuda

#define TESSERA_CUDA_CHECK(call, doing)                      \
  TESSERA_CHECK_GEN("CUDA", call, doing, rc_ != cudaSuccess, \
                    std::string(cudaGetErrorName(rc_)) + ": " + cudaGetErrorString(rc_))

#define TESSERA_CUBLAS_CHECK(call, doing)                                \
  TESSERA_CHECK_GEN("cuBLAS", call, doing, rc_ != CUBLAS_STATUS_SUCCESS, \
                    ::tessera::backends::cuda::cublas_status_string(rc_))

#define TESSERA_CUDNN_CHECK(call, doing)                               \
  TESSERA_CHECK_GEN("cuDNN", call, doing, rc_ != CUDNN_STATUS_SUCCESS, \
                    std::string(cudnnGetErrorString(rc_)))

// NCCL: callers that own a communicator abort it before the throw (NcclCommunicator does), as
// Horovod's NCCLContext::ErrorCheck does, so peers blocked in a collective are released.
#define TESSERA_NCCL_CHECK(call, doing) \
  TESSERA_CHECK_GEN("NCCL", call, doing, rc_ != ncclSuccess, std::string(ncclGetErrorString(rc_)))

// After a kernel launch: launch-configuration errors (and, in a synchronising build, faults).
#define TESSERA_CUDA_LAUNCH_CHECK(doing) TESSERA_CUDA_CHECK(cudaGetLastError(), doing)
