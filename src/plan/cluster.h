// A cluster as the layout planner sees it: devices, their memory and speed, and the links
// between them. Read from a YAML file (configs/clusters/) or measured on the spot
// (plan/measure.h); the cost model (plan/cost_model.h) reads nothing else.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <tuple>

#include "core/status.h"

namespace tessera::plan {

// A link's alpha-beta model: a message of n bytes costs latency_s + n / bandwidth_Bps.
struct Link {
  double latency_s = 0;
  double bandwidth_Bps = 0;
};

struct Cluster {
  std::string name;
  int nodes = 1;
  int devices_per_node = 1;       // ranks per node the planner lays out
  double device_memory_bytes = 0;
  std::string precision = "fp32";  // fp32 (the CPU backend) | bf16 (mixed: fp32 master + moments)
  double gemm_flops = 0;           // achievable GEMM FLOP/s per device, when no shape is measured
  double peak_flops = 0;           // the datasheet peak per device (MFU's denominator); 0: gemm_flops
  double memory_Bps = 0;           // achievable streaming bandwidth per device (element-wise ops)
  Link intra;                      // between devices of one node
  Link inter;                      // between nodes
  // Whether a collective runs beside the computation without slowing it (GPUs: NCCL on its own
  // SMs and copy engines, or a spare core). false: the collectives' copies and sums run on the
  // cores that compute (the CPU backend, whose trainer gives each rank cores / ranks threads),
  // so the dp reduction cannot hide under backward: it adds to the step.
  bool comm_overlaps_compute = true;
  // GEMM FLOP/s per shape (m, n, k: C(m x n) += A(m x k) B(k x n)), measured on the spot; a
  // shape missing here runs at gemm_flops.
  std::map<std::tuple<int64_t, int64_t, int64_t>, double> gemm_rates;
  std::string source;  // where the numbers came from, for the report

  int devices() const { return nodes * devices_per_node; }
  double gemm_rate(int64_t m, int64_t n, int64_t k) const;
};

// Reads a cluster file; an error names the file, the key and the fix.
core::Result<Cluster> load_cluster(const std::string& path);

}  // namespace tessera::plan
