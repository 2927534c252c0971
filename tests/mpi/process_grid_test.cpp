// ProcessGrid over MPI_COMM_WORLD for every tp dividing the world size (1, 2, 4 where possible):
// the rank map, the members of each tp and dp group, and sums over tp_comm and dp_comm.
#include "parallel/process_grid.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "core/log.h"
#include "mpi_test_util.h"

namespace tessera::parallel {
namespace {

using tessera::testing::world_rank;
using tessera::testing::world_size;

// Every tp in {1, 2, 4} that divides the world size.
std::vector<int> grid_tp_sizes() {
  std::vector<int> sizes;
  for (int tp : {1, 2, 4}) {
    if (world_size() % tp == 0) sizes.push_back(tp);
  }
  return sizes;
}

TEST(ProcessGrid, RankMapFollowsWorldRankEqualsDpTimesTpPlusTp) {
  for (int tp : grid_tp_sizes()) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    ProcessGrid grid(tp);
    const int r = world_rank();
    EXPECT_EQ(grid.world_rank(), r);
    EXPECT_EQ(grid.world_size(), world_size());
    EXPECT_EQ(grid.tp_size(), tp);
    EXPECT_EQ(grid.dp_size(), world_size() / tp);
    EXPECT_EQ(grid.tp_rank(), r % tp);
    EXPECT_EQ(grid.dp_rank(), r / tp);
    EXPECT_EQ(grid.tp_comm().rank(), grid.tp_rank());
    EXPECT_EQ(grid.tp_comm().size(), tp);
    EXPECT_EQ(grid.dp_comm().rank(), grid.dp_rank());
    EXPECT_EQ(grid.dp_comm().size(), grid.dp_size());
    EXPECT_EQ(grid.world_comm().rank(), r);
    EXPECT_EQ(grid.world_comm().size(), world_size());
    EXPECT_EQ(grid.tp_comm().name(), "tp");
    EXPECT_EQ(grid.dp_comm().name(), "dp");
    EXPECT_EQ(core::rank_prefix(), "[rank " + std::to_string(r) + " (dp " + std::to_string(r / tp) +
                                       ", tp " + std::to_string(r % tp) + ")]");
  }
}

TEST(ProcessGrid, TpGroupsAreNeighboursAndDpGroupsShareTpRank) {
  for (int tp : grid_tp_sizes()) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    ProcessGrid grid(tp);
    const float me = static_cast<float>(grid.world_rank());
    // tp group of dp rank d: world ranks d tp, d tp + 1, ..., d tp + tp - 1, in tp-rank order.
    std::vector<float> tp_members(tp);
    grid.tp_comm().all_gather(tp_members.data(), &me, 1);
    for (int t = 0; t < tp; ++t) EXPECT_EQ(tp_members[t], grid.dp_rank() * tp + t) << "t=" << t;
    // dp group of tp rank t: world ranks t, tp + t, 2 tp + t, ..., in dp-rank order.
    std::vector<float> dp_members(grid.dp_size());
    grid.dp_comm().all_gather(dp_members.data(), &me, 1);
    for (int d = 0; d < grid.dp_size(); ++d) {
      EXPECT_EQ(dp_members[d], d * tp + grid.tp_rank()) << "d=" << d;
    }
  }
}

TEST(ProcessGrid, SumsOverTpAndDpAreTheGroupSums) {
  for (int tp : grid_tp_sizes()) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    ProcessGrid grid(tp);
    const int d = grid.dp_rank(), t = grid.tp_rank(), D = grid.dp_size();
    float tp_sum = static_cast<float>(grid.world_rank());
    grid.tp_comm().all_reduce_sum(&tp_sum, 1);
    // sum over t' of (d tp + t') = d tp^2 + tp (tp - 1) / 2.
    EXPECT_EQ(tp_sum, d * tp * tp + tp * (tp - 1) / 2);
    float dp_sum = static_cast<float>(grid.world_rank());
    grid.dp_comm().all_reduce_sum(&dp_sum, 1);
    // sum over d' of (d' tp + t) = tp D (D - 1) / 2 + D t.
    EXPECT_EQ(dp_sum, tp * D * (D - 1) / 2 + D * t);
    float world_sum = 1.0f;
    grid.world_comm().all_reduce_sum(&world_sum, 1);
    EXPECT_EQ(world_sum, world_size());
  }
}

TEST(ProcessGrid, LocalRankAgreesWithTheLauncher) {
  ProcessGrid grid(1);
  EXPECT_GE(grid.local_rank(), 0);
  EXPECT_LT(grid.local_rank(), grid.local_size());
  if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK")) {
    EXPECT_EQ(grid.local_rank(), std::atoi(local));
  }
  if (const char* local_size = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")) {
    EXPECT_EQ(grid.local_size(), std::atoi(local_size));
  }
  // Summed over the ranks of the node, local ranks are 0 + 1 + ... + (local_size - 1).
  float local_ranks = static_cast<float>(grid.local_rank());
  grid.world_comm().all_reduce_sum(&local_ranks, 1);
  EXPECT_EQ(local_ranks, grid.local_size() * (grid.local_size() - 1) / 2);
  EXPECT_EQ(grid.local_size(), grid.world_size()) << "mpirun runs the tests on one node";
}

TEST(ProcessGrid, GridOverASubCommunicatorDoesNotSeeTheWorld) {
  // MPI_COMM_SELF: a 1 x 1 grid inside the job.
  ProcessGrid grid(MPI_COMM_SELF, 1);
  EXPECT_EQ(grid.world_rank(), 0);
  EXPECT_EQ(grid.world_size(), 1);
  EXPECT_EQ(grid.dp_size(), 1);
  EXPECT_EQ(grid.local_size(), 1);
  float x = 3.0f;
  grid.world_comm().all_reduce_sum(&x, 1);
  EXPECT_EQ(x, 3.0f);
}

}  // namespace
}  // namespace tessera::parallel
