// What every module of one model shares: the backend it runs on, the tp group its shards talk
// over, the parameter table and the two arenas (weights, gradients), plus the activation plan
// that sizes one arena for all modules' saved activations at construction (DESIGN.md 1: no
// allocation inside the step loop).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "params/param_spec.h"

namespace tessera::backends {
class Backend;
}
namespace tessera::parallel {
class Communicator;
}

namespace tessera::models {

// Borrowed references, alive as long as the Gpt that owns them.
struct ModelContext {
  backends::Backend& backend;
  // Collective over tp_comm: the module's shards; size 1 is "no tensor parallelism" (every
  // mapping and reduction is then a no-op, so modules never test for it).
  parallel::Communicator& tp_comm;
  const params::ParamSet& params;
  const core::Tensor& weights;  // this rank's parameter shards, on the backend's device
  const core::Tensor& grads;    // the gradient twin (equal offsets)
  int tp_rank = 0;
  int tp_size = 1;

  // Device pointers of parameter i's shard and its gradient (resolved once, at construction).
  float* weight(int i) const { return weights.f32() + params.offset(i); }
  float* grad(int i) const { return grads.f32() + params.offset(i); }
};

// Collects (tensor, shape) requests, then allocates one zeroed arena on the backend and points
// every requested tensor at its view (each rounded to 16 elements: 64-byte aligned).
class ArenaPlan {
 public:
  void add(core::Tensor* tensor, core::Shape shape) {
    requests_.emplace_back(tensor, std::move(shape));
  }
  // Allocates and fills every requested tensor; returns the arena (keep it alive).
  core::Tensor allocate(backends::Backend& backend);

 private:
  std::vector<std::pair<core::Tensor*, core::Shape>> requests_;
};

}  // namespace tessera::models
