// Cluster files: a flat YAML map of the keys below (configs/clusters/*.yaml show each one).
#include "plan/cluster.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <set>

namespace tessera::plan {

double Cluster::gemm_rate(int64_t m, int64_t n, int64_t k) const {
  auto it = gemm_rates.find({m, n, k});
  return it != gemm_rates.end() ? it->second : gemm_flops;
}

namespace {

const std::set<std::string> kKeys = {"name",
                                     "nodes",
                                     "devices_per_node",
                                     "device_memory_gb",
                                     "precision",
                                     "gemm_tflops",
                                     "peak_tflops",
                                     "memory_bandwidth_gbs",
                                     "intra_latency_us",
                                     "intra_bandwidth_gbs",
                                     "inter_latency_us",
                                     "inter_bandwidth_gbs",
                                     "comm_overlaps_compute"};

}  // namespace

core::Result<Cluster> load_cluster(const std::string& path) {
  const std::string where = "cluster file '" + path + "'";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return core::Status::error(where + " not found; give a file such as "
                               "configs/clusters/h100-dgx.yaml, or use --measure");
  }
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    return core::Status::error(where + ": not YAML (" + std::string(e.what()) +
                               "); fix the syntax");
  }
  if (!root.IsMap()) {
    return core::Status::error(where + ": expected a map of keys (name, nodes, ...); see "
                               "configs/clusters/h100-dgx.yaml");
  }
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    if (!kKeys.count(key)) {
      std::string known;
      for (const std::string& k : kKeys) known += (known.empty() ? "" : ", ") + k;
      return core::Status::error(where + ": unknown key '" + key + "'; the keys are " + known);
    }
  }
  Cluster c;
  c.source = path;
  std::string bad;
  auto number = [&](const char* key, double* out, double min_exclusive) -> bool {
    if (!root[key]) {
      bad = where + ": key '" + key + "' is missing; add it (see configs/clusters/h100-dgx.yaml)";
      return false;
    }
    try {
      *out = root[key].as<double>();
    } catch (const YAML::Exception&) {
      bad = where + ": key '" + key + "' must be a number";
      return false;
    }
    if (!(*out > min_exclusive)) {
      bad = where + ": key '" + key + "' = " + root[key].as<std::string>() + " must be > " +
            std::to_string(static_cast<int>(min_exclusive));
      return false;
    }
    return true;
  };
  double nodes = 0, per_node = 0, mem_gb = 0, tflops = 0, bw = 0, il = 0, ib = 0, xl = 0, xb = 0;
  if (!number("nodes", &nodes, 0) || !number("devices_per_node", &per_node, 0) ||
      !number("device_memory_gb", &mem_gb, 0) || !number("gemm_tflops", &tflops, 0) ||
      !number("memory_bandwidth_gbs", &bw, 0) || !number("intra_latency_us", &il, -1) ||
      !number("intra_bandwidth_gbs", &ib, 0) || !number("inter_latency_us", &xl, -1) ||
      !number("inter_bandwidth_gbs", &xb, 0)) {
    return core::Status::error(bad);
  }
  c.name = root["name"] ? root["name"].as<std::string>() : std::filesystem::path(path).stem().string();
  c.nodes = static_cast<int>(nodes);
  c.devices_per_node = static_cast<int>(per_node);
  if (c.nodes != nodes || c.devices_per_node != per_node) {
    return core::Status::error(where + ": nodes and devices_per_node must be whole numbers");
  }
  c.device_memory_bytes = mem_gb * 1e9;
  c.gemm_flops = tflops * 1e12;
  c.peak_flops = c.gemm_flops;
  if (root["peak_tflops"]) {
    double peak = 0;
    if (!number("peak_tflops", &peak, 0)) return core::Status::error(bad);
    c.peak_flops = peak * 1e12;
  }
  c.memory_Bps = bw * 1e9;
  c.intra = {il * 1e-6, ib * 1e9};
  c.inter = {xl * 1e-6, xb * 1e9};
  if (root["comm_overlaps_compute"]) {
    try {
      c.comm_overlaps_compute = root["comm_overlaps_compute"].as<bool>();
    } catch (const YAML::Exception&) {
      return core::Status::error(where + ": key 'comm_overlaps_compute' must be true or false");
    }
  }
  c.precision = root["precision"] ? root["precision"].as<std::string>() : "fp32";
  if (c.precision != "fp32" && c.precision != "bf16") {
    return core::Status::error(where + ": key 'precision' = '" + c.precision +
                               "' is not a precision; use fp32 or bf16");
  }
  return c;
}

}  // namespace tessera::plan
