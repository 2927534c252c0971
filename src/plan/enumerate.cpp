// Enumeration and ranking of layouts.
#include "plan/enumerate.h"

#include <algorithm>

namespace tessera::plan {

std::vector<Layout> enumerate_layouts(const Workload& w, int world) {
  std::vector<Layout> out;
  for (int tp = 1; tp <= world; ++tp) {
    if (world % tp != 0) continue;
    const int dp = world / tp;
    if (w.global_batch % dp != 0) continue;
    const int64_t per_rank = w.global_batch / dp;
    std::vector<int64_t> micros;
    for (int64_t mb = 1; mb < per_rank; mb *= 2) {
      if (per_rank % mb == 0) micros.push_back(mb);
    }
    micros.push_back(per_rank);
    for (const int64_t micro : micros) {
      for (int zero = 0; zero <= (dp > 1 ? 1 : 0); ++zero) {
        for (int sp = 0; sp <= (tp > 1 ? 1 : 0); ++sp) {
          out.push_back(Layout{dp, tp, micro, zero, sp == 1});
        }
      }
    }
  }
  return out;
}

std::vector<Prediction> rank_layouts(const Workload& w, const Cluster& cluster,
                                     const std::vector<Layout>& layouts) {
  std::vector<Prediction> out;
  for (const Layout& l : layouts) out.push_back(predict(w, cluster, l));
  std::stable_sort(out.begin(), out.end(), [](const Prediction& a, const Prediction& b) {
    if (a.fits != b.fits) return a.fits;
    return a.fits && a.step_s() < b.step_s();
  });
  return out;
}

std::string train_command(const std::string& config_path, const Layout& l) {
  std::string cmd = "mpirun -n " + std::to_string(l.dp * l.tp) + " tessera-train " + config_path +
                    " --set parallel.tp=" + std::to_string(l.tp) +
                    " --set train.micro_batch_size=" + std::to_string(l.micro);
  if (l.zero == 1) cmd += " --set optim.zero=1";
  if (l.sequence_parallel) cmd += " --set parallel.sequence_parallel=true";
  return cmd;
}

}  // namespace tessera::plan
