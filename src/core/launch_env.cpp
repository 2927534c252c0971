// LaunchEnv; see launch_env.h.
#include "core/launch_env.h"

#include <charconv>
#include <cstdlib>

#include "core/error.h"

namespace tessera::core {
namespace {

std::string value_of(const std::function<const char*(const char*)>& lookup, const char* name) {
  const char* v = lookup(name);
  return v != nullptr ? std::string(v) : std::string();
}

}  // namespace

std::string LaunchEnv::describe() const {
  if (!under_slurm()) return "";
  std::string s = "slurm job " + job_id;
  if (!job_name.empty()) s += " (" + job_name + ")";
  if (!step_id.empty()) s += ", step " + step_id;
  s += ", " + std::to_string(num_nodes) + (num_nodes == 1 ? " node " : " nodes ") + node_list;
  s += ", " + std::to_string(local_size) + (local_size == 1 ? " rank" : " ranks") + " on this node";
  return s;
}

LaunchEnv slurm_env_from(const std::function<const char*(const char*)>& lookup) {
  LaunchEnv env;
  env.job_id = value_of(lookup, "SLURM_JOB_ID");
  env.job_name = value_of(lookup, "SLURM_JOB_NAME");
  env.node_list = value_of(lookup, "SLURM_JOB_NODELIST");
  env.step_id = value_of(lookup, "SLURM_STEP_ID");
  env.node_name = value_of(lookup, "SLURMD_NODENAME");
  const std::string nodes = value_of(lookup, "SLURM_JOB_NUM_NODES");
  int n = 0;
  const auto [end, ec] = std::from_chars(nodes.data(), nodes.data() + nodes.size(), n);
  if (ec == std::errc() && end == nodes.data() + nodes.size() && n > 0) env.num_nodes = n;
  return env;
}

LaunchEnv read_slurm_env() {
  return slurm_env_from([](const char* name) { return std::getenv(name); });
}

LaunchEnv read_launch_env(MPI_Comm world) {
  LaunchEnv env = read_slurm_env();
  int world_rank = 0;
  TESSERA_MPI_CHECK(MPI_Comm_rank(world, &world_rank), "reading the world rank");
  MPI_Comm node = MPI_COMM_NULL;
  TESSERA_MPI_CHECK(
      MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL, &node),
      "finding the ranks on this node");
  TESSERA_MPI_CHECK(MPI_Comm_rank(node, &env.local_rank), "reading the node-local rank");
  TESSERA_MPI_CHECK(MPI_Comm_size(node, &env.local_size), "reading the node-local size");
  TESSERA_MPI_CHECK(MPI_Comm_free(&node), "freeing the node split");
  return env;
}

}  // namespace tessera::core
