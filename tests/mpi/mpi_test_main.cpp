// gtest main for MPI tests: every rank runs every test; only rank 0 prints; the exit code is
// non-zero on every rank when any rank failed any test (an all-reduce of the failure flags).
#include <gtest/gtest.h>
#include <mpi.h>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  if (world_rank != 0) {
    // Failures on other ranks are still printed (as failures, with the rank in gtest's output).
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any_failed && world_rank == 0) std::fprintf(stderr, "MPI tests failed on at least one rank\n");
  MPI_Finalize();
  return any_failed;
}
