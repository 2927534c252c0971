// gtest main for the CUDA + MPI tests (NCCL). When any rank has no usable GPU every rank runs
// nothing and exits 77, which ctest reports as "Not Run" (SKIP_RETURN_CODE), never as passed.
// Otherwise rank r uses device local_rank % device_count; rank 0 prints gtest's usual output,
// other ranks their failed assertions tagged with the world rank; the exit code is non-zero on
// every rank when any rank failed any test.
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "../mpi/mpi_gtest.h"

namespace {

constexpr int kNotRunExitCode = 77;

// Sets name=value unless the user already set it.
void default_env(const char* name, const std::string& value) { setenv(name, value.c_str(), 0); }

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int world_rank = 0, world_size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);

  int device_count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&device_count);
  const int usable = rc == cudaSuccess && device_count > 0 ? 1 : 0;
  int all_usable = 0;
  MPI_Allreduce(&usable, &all_usable, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!all_usable) {
    if (!usable) {
      std::printf("[rank %d] no usable CUDA device (%s)\n", world_rank,
                  rc != cudaSuccess ? cudaGetErrorString(rc) : "device count 0");
    }
    if (world_rank == 0) {
      std::printf(
          "tessera_cuda_mpi_tests: a rank has no usable CUDA device: %d tests NOT RUN on "
          "%d ranks\n",
          ::testing::UnitTest::GetInstance()->total_test_count(), world_size);
    }
    MPI_Finalize();
    return kNotRunExitCode;
  }

  // Ranks on this node and this rank's index among them: device local_rank % device_count.
  MPI_Comm node_comm = MPI_COMM_NULL;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL, &node_comm);
  int local_rank = 0, local_size = 1;
  MPI_Comm_rank(node_comm, &local_rank);
  MPI_Comm_size(node_comm, &local_size);
  MPI_Comm_free(&node_comm);
  const int device = local_rank % device_count;
  cudaSetDevice(device);

  // NCCL refuses two ranks of one communicator on one GPU ("Duplicate GPU detected") when they
  // share a host id. With more ranks than GPUs here, each rank presents its own host id, so NCCL
  // treats the ranks as separate nodes joined by its socket transport over loopback; user
  // settings of these variables win. Must precede the first NCCL call (NCCL reads them once).
  const int shares_gpu = local_size > device_count ? 1 : 0;
  int any_shares_gpu = 0;
  MPI_Allreduce(&shares_gpu, &any_shares_gpu, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any_shares_gpu) {
    default_env("NCCL_HOSTID", "tessera-test-rank-" + std::to_string(world_rank));
    default_env("NCCL_NET", "Socket");
    default_env("NCCL_SOCKET_IFNAME", "lo");
  }
  if (world_rank == 0) {
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, device);
    std::printf(
        "tessera_cuda_mpi_tests: %d ranks, %d device(s) per node (%s)%s\n", world_size,
        device_count, prop.name,
        any_shares_gpu ? "; ranks share GPUs: one NCCL host id per rank, socket transport" : "");
  }

  const int any_failed =
      tessera::testing::run_all_tests_on_every_rank(world_rank, "CUDA MPI tests");
  MPI_Finalize();
  return any_failed;
}
