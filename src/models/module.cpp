// ArenaPlan: one allocation for every module's activations.
#include "models/module.h"

#include <algorithm>

#include "backends/backend.h"

namespace tessera::models {

void ArenaPlan::add(core::Tensor* tensor, core::Shape shape) {
  const int64_t rounded = (core::shape_numel(shape) + 15) / 16 * 16;
  requests_.push_back({tensor, std::move(shape), cursor_});
  cursor_ += rounded;
  end_ = std::max(end_, cursor_);
}

core::Tensor ArenaPlan::allocate(backends::Backend& backend) {
  core::Tensor arena = backend.zeros({end_});
  for (const Request& r : requests_) *r.tensor = arena.view(r.offset, r.shape);
  requests_.clear();
  cursor_ = end_ = 0;
  return arena;
}

}  // namespace tessera::models
