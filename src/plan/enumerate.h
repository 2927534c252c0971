// The planner's search: every layout of a world size (dp x tp x micro-batch x zero x sequence
// parallelism) the grid allows, predicted, the runnable ones ranked by step time.
#pragma once

#include <string>
#include <vector>

#include "plan/cost_model.h"

namespace tessera::plan {

// Layouts with dp x tp = world: tp dividing the world, micro-batches the powers of two dividing
// the per-rank batch (and the per-rank batch itself), zero 0/1 (1 only with dp > 1), sequence
// parallelism off/on (on only with tp > 1). Divisibility by heads, width and vocabulary is left
// to predict(), which says why a layout cannot run.
std::vector<Layout> enumerate_layouts(const Workload& w, int world);

// predict() for each layout: the runnable ones by step time (fastest first), then the others.
std::vector<Prediction> rank_layouts(const Workload& w, const Cluster& cluster,
                                     const std::vector<Layout>& layouts);

// The command line that trains `layout` (world ranks under mpirun) with tessera-train.
std::string train_command(const std::string& config_path, const Layout& layout);

}  // namespace tessera::plan
