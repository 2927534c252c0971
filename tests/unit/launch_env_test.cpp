// LaunchEnv: Slurm fields from SLURM_* variables (empty outside Slurm), local rank and size from
// MPI alone, never from the launcher's rank variables.
#include "core/launch_env.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdlib>
#include <map>
#include <string>

namespace tessera::core {
namespace {

LaunchEnv from_map(const std::map<std::string, std::string>& vars) {
  return slurm_env_from([&vars](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

// Sets a variable for the life of the object and restores what was there before.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_.empty()) {
      unsetenv(name_.c_str());
    } else {
      setenv(name_.c_str(), old_.c_str(), 1);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, old_;
};

TEST(LaunchEnv, ReadsTheSlurmJobAndStep) {
  const LaunchEnv env = from_map({{"SLURM_JOB_ID", "4217"},
                                  {"SLURM_JOB_NAME", "tessera-train"},
                                  {"SLURM_JOB_NODELIST", "gpu[03-04]"},
                                  {"SLURM_STEP_ID", "0"},
                                  {"SLURMD_NODENAME", "gpu04"},
                                  {"SLURM_JOB_NUM_NODES", "2"}});
  EXPECT_TRUE(env.under_slurm());
  EXPECT_EQ(env.job_id, "4217");
  EXPECT_EQ(env.job_name, "tessera-train");
  EXPECT_EQ(env.node_list, "gpu[03-04]");
  EXPECT_EQ(env.step_id, "0");
  EXPECT_EQ(env.node_name, "gpu04");
  EXPECT_EQ(env.num_nodes, 2);
  EXPECT_EQ(env.describe(),
            "slurm job 4217 (tessera-train), step 0, 2 nodes gpu[03-04], 1 rank on this node");
}

TEST(LaunchEnv, OutsideSlurmEverythingIsEmpty) {
  const LaunchEnv env = from_map({});
  EXPECT_FALSE(env.under_slurm());
  EXPECT_EQ(env.job_id, "");
  EXPECT_EQ(env.node_list, "");
  EXPECT_EQ(env.step_id, "");
  EXPECT_EQ(env.num_nodes, 0);
  EXPECT_EQ(env.describe(), "");
}

TEST(LaunchEnv, UnreadableNodeCountIsZero) {
  for (const char* bad : {"", "two", "2x", "-1", "0"}) {
    const LaunchEnv env = from_map({{"SLURM_JOB_ID", "1"}, {"SLURM_JOB_NUM_NODES", bad}});
    EXPECT_EQ(env.num_nodes, 0) << "SLURM_JOB_NUM_NODES='" << bad << "'";
  }
}

TEST(LaunchEnv, LocalRankComesFromMpiNotFromSlurmVariables) {
  // As under mpirun inside an allocation: the launcher's variables describe a 16-task step.
  const ScopedEnv job("SLURM_JOB_ID", "77");
  const ScopedEnv procid("SLURM_PROCID", "5");
  const ScopedEnv localid("SLURM_LOCALID", "3");
  const ScopedEnv ntasks("SLURM_NTASKS", "16");
  const ScopedEnv per_node("SLURM_NTASKS_PER_NODE", "8");
  const LaunchEnv self = read_launch_env(MPI_COMM_SELF);
  EXPECT_EQ(self.job_id, "77");
  EXPECT_EQ(self.local_rank, 0);
  EXPECT_EQ(self.local_size, 1);

  int world_rank = 0, world_size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  const LaunchEnv world = read_launch_env(MPI_COMM_WORLD);
  EXPECT_GE(world.local_rank, 0);
  EXPECT_LT(world.local_rank, world.local_size);
  EXPECT_LE(world.local_size, world_size);
  if (world_size == 1) {
    EXPECT_EQ(world.local_rank, 0);
    EXPECT_EQ(world.local_size, 1);
  }
}

}  // namespace
}  // namespace tessera::core
