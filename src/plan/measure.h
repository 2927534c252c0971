// `tessera-plan --measure`: the cluster measured on the spot, on the ranks the planner runs on.
// Every rank measures at the same moment (so ranks sharing cores see their share), with the
// threads the trainer would give it; the figures are the slowest rank's.
#pragma once

#include <vector>

#include "parallel/communicator.h"
#include "plan/cluster.h"
#include "plan/cost_model.h"

namespace tessera::plan {

// Collective over `world`. GEMM FLOP/s for each distinct shape in `gemms` (the CPU backend's
// matmul, best of a few runs), streaming bandwidth (a triad over arrays far larger than the
// caches), and with more than one rank an all-reduce's latency (8 bytes) and bandwidth (8 MiB)
// over `world`, used for both intra- and inter-node links (one node: the inter-node link is not
// measured, and `source` says so).
Cluster measure_cluster(const std::vector<Gemm>& gemms, parallel::Communicator& world,
                        double device_memory_bytes);

}  // namespace tessera::plan
