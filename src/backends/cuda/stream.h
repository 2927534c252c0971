// The stream type of the CUDA launchers' plain C++ headers: cudaStream_t without including
// cuda_runtime.h, so callers of a launcher need no nvcc (docs/DESIGN.md). nullptr is the
// legacy default stream.
#pragma once

struct CUstream_st;

namespace tessera::backends::cuda {
using Stream = CUstream_st*;  // the same type as cudaStream_t
}  // namespace tessera::backends::cuda
