// gtest main for MPI tests: every rank runs every test; rank 0 prints gtest's usual output, other
// ranks print only their failed assertions, each line tagged with the world rank. The exit code
// is non-zero on every rank when any rank failed any test (an all-reduce of the failure flags).
#include <gtest/gtest.h>
#include <mpi.h>

#include "core/log.h"
#include "mpi_gtest.h"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  // Progress lines of the code under test: world rank 0 only.
  tessera::core::set_log_identity(world_rank, -1, -1);
  const int any_failed = tessera::testing::run_all_tests_on_every_rank(world_rank, "MPI tests");
  MPI_Finalize();
  return any_failed;
}
