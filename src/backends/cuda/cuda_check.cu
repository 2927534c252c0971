// Library status strings for the CUDA check macros (cuda_check.h).
#include "backends/cuda/cuda_check.h"

namespace tessera::backends::cuda {

std::string cublas_status_string(cublasStatus_t status) {
  const char* name = cublasGetStatusName(status);
  const char* text = cublasGetStatusString(status);
  return std::string(name != nullptr ? name : "cuBLAS status") + ": " +
         (text != nullptr ? text : std::to_string(static_cast<int>(status)));
}

}  // namespace tessera::backends::cuda
