// The CUDA backend target's anchor: reports the CUDA runtime version. Kernels arrive with the
// CUDA backend issue; until then this keeps TESSERA_CUDA=ON configuring and compiling.
#include <cuda_runtime.h>

namespace tessera::kernels::cuda {
int runtime_version() {
  int v = 0;
  return cudaRuntimeGetVersion(&v) == cudaSuccess ? v : -1;
}
}  // namespace tessera::kernels::cuda
