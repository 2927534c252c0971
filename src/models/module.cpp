// ArenaPlan: one allocation for every module's activations.
#include "models/module.h"

#include "backends/backend.h"

namespace tessera::models {

core::Tensor ArenaPlan::allocate(backends::Backend& backend) {
  auto rounded = [](const core::Shape& s) { return (core::shape_numel(s) + 15) / 16 * 16; };
  int64_t total = 0;
  for (const auto& [tensor, shape] : requests_) total += rounded(shape);
  core::Tensor arena = backend.zeros({total});
  int64_t offset = 0;
  for (const auto& [tensor, shape] : requests_) {
    *tensor = arena.view(offset, shape);
    offset += rounded(shape);
  }
  requests_.clear();
  return arena;
}

}  // namespace tessera::models
