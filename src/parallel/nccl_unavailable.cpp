// make_nccl_communicator in a build without the CUDA backend: a clear error, never a silent MPI
// fallback on device memory.
#include "core/error.h"
#include "parallel/nccl_communicator.h"

namespace tessera::parallel {

std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm, std::string name, void*) {
  throw Error("making the NCCL communicator '" + name +
              "': this build has no CUDA backend (TESSERA_CUDA=OFF); run the CUDA build's apps "
              "(scripts/build.sh --cuda, nvcc on PATH) or use train.device=cpu");
}

}  // namespace tessera::parallel
