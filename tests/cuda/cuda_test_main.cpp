// gtest main for the CUDA tests. Without a usable GPU (none present, no driver, or a driver too
// old for this build) it runs nothing and exits 77, which ctest reports as "Not Run" (never as
// passed: SKIP_RETURN_CODE in tests/CMakeLists.txt); with one it runs every test on device 0.
// MPI is initialised (one rank) because a model without a tp group talks over MPI_COMM_SELF.
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

namespace {
constexpr int kNoGpuExitCode = 77;
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess || count == 0) {
    std::printf("tessera_cuda_tests: no usable CUDA device (%s): %d tests NOT RUN\n",
                rc != cudaSuccess ? cudaGetErrorString(rc) : "device count 0",
                ::testing::UnitTest::GetInstance()->total_test_count());
    MPI_Finalize();
    return kNoGpuExitCode;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("tessera_cuda_tests: device 0 is %s (sm_%d%d, %d SMs)\n", prop.name, prop.major,
              prop.minor, prop.multiProcessorCount);
  const int result = RUN_ALL_TESTS();
  MPI_Finalize();
  return result;
}
