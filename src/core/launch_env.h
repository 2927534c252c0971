// LaunchEnv: where this process was launched. The Slurm job and step come from SLURM_* variables
// (empty outside Slurm); the node-local rank and size come from MPI's shared-memory split, never
// from launcher variables, so they are right under srun, mpirun, and mpirun inside an allocation.
#pragma once

#include <mpi.h>

#include <functional>
#include <string>

namespace tessera::core {

struct LaunchEnv {
  std::string job_id;     // SLURM_JOB_ID; empty outside Slurm
  std::string job_name;   // SLURM_JOB_NAME
  std::string node_list;  // SLURM_JOB_NODELIST, in Slurm's compressed form ("node[1-2]")
  std::string step_id;    // SLURM_STEP_ID; empty in the batch script itself
  std::string node_name;  // SLURMD_NODENAME: the Slurm node this process runs on
  int num_nodes = 0;      // SLURM_JOB_NUM_NODES; 0 outside Slurm or when unreadable
  int local_rank = 0;     // this rank's index among the ranks of its node (MPI)
  int local_size = 1;     // ranks on this node (MPI)

  bool under_slurm() const { return !job_id.empty(); }
  // One line for the run's log, e.g. "slurm job 12 (tessera-train), step 0, 2 nodes node[1-2],
  // 2 ranks on this node"; empty outside Slurm.
  std::string describe() const;
};

// The Slurm fields read through `lookup` (returns nullptr for an unset variable); local rank and
// size keep their defaults. SLURM_PROCID, SLURM_LOCALID and SLURM_NTASKS are deliberately not
// read: under mpirun inside an allocation they describe the launch step, not this rank.
LaunchEnv slurm_env_from(const std::function<const char*(const char*)>& lookup);
// The same from this process's environment.
LaunchEnv read_slurm_env();
// Collective over `world`: read_slurm_env() plus local rank and size from
// MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED).
LaunchEnv read_launch_env(MPI_Comm world);

}  // namespace tessera::core
