// ArenaPlan: one allocation for every module's activations.
#include "models/module.h"

#include <algorithm>

#include "backends/backend.h"
#include "core/error.h"

namespace tessera::models {

float* ModelContext::f32_rows(int64_t numel) const {
  TESSERA_ASSERT(act_f32 != nullptr && numel <= act_f32->numel(),
                 "fitting a module's fp32 rows in the bf16 activations' scratch (act_f32)");
  return act_f32->f32();
}

void ArenaPlan::add(core::Tensor* tensor, core::Shape shape, core::DType dtype) {
  const int64_t bytes = core::shape_numel(shape) * static_cast<int64_t>(core::dtype_size(dtype));
  requests_.push_back({tensor, std::move(shape), dtype, cursor_});
  cursor_ += (bytes + 63) / 64 * 64;
  end_ = std::max(end_, cursor_);
}

core::Tensor ArenaPlan::allocate(backends::Backend& backend) {
  core::Tensor arena = backend.zeros({end_ / 4});  // end_ is a multiple of 64 bytes
  for (const Request& r : requests_) *r.tensor = arena.view_bytes(r.offset, r.shape, r.dtype);
  requests_.clear();
  cursor_ = end_ = 0;
  return arena;
}

}  // namespace tessera::models
