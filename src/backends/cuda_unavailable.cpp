// The CUDA backend's factory in a build without it (TESSERA_CUDA=OFF): a clear error.
#include "backends/cuda_factory.h"

namespace tessera::backends {

core::Result<std::unique_ptr<Backend>> make_cuda_backend(int, int) {
  return core::Status::error(
      "train.device 'cuda': this build of Tessera has no CUDA backend (configured with "
      "TESSERA_CUDA=OFF, as scripts/build.sh's build/ is); run the CUDA build's apps "
      "(scripts/build.sh --cuda, nvcc on PATH: build-cuda/apps) or use train.device=cpu");
}

bool cuda_backend_built() { return false; }

}  // namespace tessera::backends
