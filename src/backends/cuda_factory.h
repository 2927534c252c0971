// The CUDA backend's factory. Defined by src/backends/cuda/cuda_backend.cpp in a build with the
// CUDA backend (TESSERA_CUDA=ON) and by cuda_unavailable.cpp otherwise; CMake picks one, so no
// caller needs an #ifdef.
#pragma once

#include <memory>

#include "backends/backend.h"
#include "core/status.h"

namespace tessera::backends {

// The GPU of local rank local_rank (device local_rank % device_count); errors name the fix.
core::Result<std::unique_ptr<Backend>> make_cuda_backend(int local_rank, int local_size);

// Whether this build has the CUDA backend compiled in.
bool cuda_backend_built();

}  // namespace tessera::backends
