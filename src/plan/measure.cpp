// Measurements for the cost model, made collectively so every rank measures under the same load.
#include "plan/measure.h"

#include <algorithm>
#include <set>
#include <tuple>
#include <vector>

#include "backends/backend.h"
#include "core/timer.h"

namespace tessera::plan {

namespace {

// The slowest rank's time of one trial that every rank started together: the step waits for
// the last rank, and on an oversubscribed node (more ranks than cores) a rank's own clock says
// how long it ran when it ran, not how long the others waited for it. Taking each rank's best
// trial first and then the slowest rank's would credit every rank with its luckiest share of
// the cores.
double slowest(double seconds, parallel::Communicator& world) {
  world.all_reduce(&seconds, 1, parallel::ReduceOp::kMax);
  return seconds;
}

// The median of `trials` timings after a warm-up one, each repeating `run` to about 50 ms (at
// least once) and lasting until its slowest rank is done; returns seconds per run. The median,
// not the best: a step is timed as the median of steps, and ranks sharing cores see their
// typical share of them, not their luckiest.
template <typename Run>
double median_seconds(Run run, parallel::Communicator& world, int trials = 3) {
  world.barrier();
  core::Timer warm;
  run();
  const double once = slowest(warm.seconds(), world);
  const int reps = std::max(1, static_cast<int>(0.05 / std::max(once, 1e-6)));
  std::vector<double> times;
  for (int trial = 0; trial < trials; ++trial) {
    world.barrier();
    core::Timer t;
    for (int r = 0; r < reps; ++r) run();
    times.push_back(slowest(t.seconds(), world) / reps);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

double gemm_flops(int64_t m, int64_t n, int64_t k, parallel::Communicator& world) {
  backends::Backend& be = backends::cpu_backend();
  std::vector<float> a(static_cast<size_t>(m * k), 0.5f), b(static_cast<size_t>(n * k), 0.25f),
      c(static_cast<size_t>(m * n));
  be.matmul_forward(c.data(), a.data(), b.data(), nullptr, m, k, n);  // first-touch, warm
  return 2.0 * m * n * k /
         median_seconds([&] { be.matmul_forward(c.data(), a.data(), b.data(), nullptr, m, k, n); },
                        world);
}

double triad_Bps(parallel::Communicator& world) {
  const int64_t n = int64_t{1} << 23;  // 3 arrays of 32 MiB
  std::vector<float> a(n, 1.0f), b(n, 2.0f), c(n, 3.0f);
  auto triad = [&] {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) a[i] = b[i] + 0.5f * c[i];
  };
  return 12.0 * n / median_seconds(triad, world);
}

// Median time of an all-reduce of `floats` floats over world.
double all_reduce_time(int64_t floats, parallel::Communicator& world, int reps) {
  std::vector<float> buf(static_cast<size_t>(floats), 1.0f);
  std::vector<double> times;
  for (int r = 0; r < reps + 1; ++r) {
    world.barrier();
    core::Timer t;
    world.all_reduce(buf.data(), floats, parallel::ReduceOp::kSum);
    if (r > 0) times.push_back(t.seconds());
  }
  std::sort(times.begin(), times.end());
  double med = times[times.size() / 2];
  world.all_reduce(&med, 1, parallel::ReduceOp::kMax);
  return med;
}

}  // namespace

Cluster measure_cluster(const std::vector<Gemm>& gemms, parallel::Communicator& world,
                        double device_memory_bytes) {
  Cluster c;
  c.name = "measured";
  c.nodes = 1;
  c.devices_per_node = world.size();
  c.device_memory_bytes = device_memory_bytes;
  c.precision = "fp32";
  // The CPU backend's collectives copy and sum on the cores that compute.
  c.comm_overlaps_compute = false;
  std::set<std::tuple<int64_t, int64_t, int64_t>> shapes;
  for (const Gemm& g : gemms) shapes.insert({g.m, g.n, g.k});
  double best = 0;
  for (const auto& [m, n, k] : shapes) {
    const double rate = gemm_flops(m, n, k, world);
    c.gemm_rates[{m, n, k}] = rate;
    best = std::max(best, rate);
  }
  c.gemm_flops = best;
  c.memory_Bps = triad_Bps(world);
  if (world.size() > 1) {
    const int p = world.size();
    const double t_small = all_reduce_time(2, world, 50);
    const double bytes = 8.0 * 1048576.0;
    const double t_big = all_reduce_time(static_cast<int64_t>(bytes / 4), world, 5);
    const double alpha = t_small / (2.0 * (p - 1));
    const double beta = 2.0 * (p - 1) / p * bytes / std::max(t_big - 2.0 * (p - 1) * alpha, 1e-9);
    c.intra = {alpha, beta};
    c.inter = c.intra;
    c.source = "measured on " + std::to_string(p) +
               " ranks (one node: the inter-node link is not measured and is taken as the "
               "intra-node one)";
  } else {
    c.intra = {0, 1e30};
    c.inter = c.intra;
    c.source = "measured on 1 rank (no links to measure)";
  }
  return c;
}

}  // namespace tessera::plan
