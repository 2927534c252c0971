// The CUDA check macros throw tessera::Error naming what was being done, the call and the
// library's string; a clean call passes through.
#include "backends/cuda/cuda_check.h"

#include <gtest/gtest.h>

#include <string>

namespace tessera::backends::cuda {
namespace {

TEST(CudaCheck, FailureNamesTheDoingTheCallAndTheLibraryString) {
  void* p = nullptr;
  try {
    // More than any GPU holds: cudaErrorMemoryAllocation.
    TESSERA_CUDA_CHECK(cudaMalloc(&p, size_t{1} << 60), "allocating an impossible buffer");
    FAIL() << "no throw";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("allocating an impossible buffer"), std::string::npos) << m;
    EXPECT_NE(m.find("cudaMalloc"), std::string::npos) << m;
    EXPECT_NE(m.find("cudaErrorMemoryAllocation"), std::string::npos) << m;
  }
  cudaGetLastError();  // clear the sticky-free error state for later tests
}

TEST(CudaCheck, SuccessPassesThrough) {
  int count = 0;
  EXPECT_NO_THROW(TESSERA_CUDA_CHECK(cudaGetDeviceCount(&count), "counting devices"));
  EXPECT_GE(count, 1);
}

}  // namespace
}  // namespace tessera::backends::cuda
