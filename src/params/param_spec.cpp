// ParamSpec shard arithmetic, the parameter arena and layout-invariant initialisation.
#include "params/param_spec.h"

#include "core/error.h"
#include "core/philox.h"

namespace tessera::params {

core::Shape ParamSpec::local_shape(int tp_size) const {
  core::Shape s = global_shape;
  if (!replicated()) {
    // Invariant: every block of the split dim divides evenly over tp (checked by the grid).
    TESSERA_ASSERT(s[split_dim] % (split_parts * tp_size) == 0,
                   "computing a parameter shard shape (split dim must divide by parts x tp)");
    s[split_dim] /= tp_size;
  }
  return s;
}

int64_t ParamSpec::global_index(int64_t local_index, int tp_rank, int tp_size) const {
  if (replicated() || tp_size == 1) return local_index;
  // Split the local index into (outer, split coordinate, inner) around split_dim. Only split_dim
  // differs between the local and global shapes. (No Shape is built: this runs per element.)
  int64_t inner = 1;
  for (size_t d = split_dim + 1; d < global_shape.size(); ++d) inner *= global_shape[d];
  const int64_t local_len = global_shape[split_dim] / tp_size;
  const int64_t in = local_index % inner;
  const int64_t k = (local_index / inner) % local_len;
  const int64_t outer = local_index / (inner * local_len);
  const int64_t block_local = local_len / split_parts;  // rows of one part on this rank
  const int64_t block_global = block_local * tp_size;   // rows of one part globally
  const int64_t part = k / block_local;
  const int64_t g = part * block_global + tp_rank * block_local + (k % block_local);
  return (outer * global_shape[split_dim] + g) * inner + in;
}

uint64_t init_stream(const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

ParamSet::ParamSet(std::vector<ParamSpec> specs, int tp_rank, int tp_size)
    : specs_(std::move(specs)), tp_rank_(tp_rank), tp_size_(tp_size) {
  for (const ParamSpec& s : specs_) {
    local_shapes_.push_back(s.local_shape(tp_size));
    offsets_.push_back(total_);
    // 16-float alignment keeps every view 64-byte aligned for vector loads.
    total_ += (core::shape_numel(local_shapes_.back()) + 15) / 16 * 16;
  }
}

int ParamSet::index_of(const std::string& name) const {
  for (int i = 0; i < size(); ++i)
    if (specs_[i].name == name) return i;
  return -1;
}

core::Tensor ParamSet::view(const core::Tensor& arena, int i) const {
  return arena.view(offsets_[i], local_shapes_[i]);
}

float* ParamSet::f32(const core::Tensor& arena, int i) const {
  TESSERA_ASSERT(i >= 0 && i < size() && arena.numel() >= total_,
                 "taking parameter i's data from an arena with this ParamSet's layout");
  return arena.f32() + offsets_[i];
}

int64_t ParamSet::global_param_count(bool exclude_padding) const {
  int64_t n = 0;
  for (const ParamSpec& s : specs_) {
    int64_t count = core::shape_numel(s.global_shape);
    if (exclude_padding && s.init_rows >= 0) count = count / s.global_shape[0] * s.init_rows;
    n += count;
  }
  return n;
}

core::Tensor ParamSet::make_twin() const { return core::Tensor::zeros({total_}); }

void ParamSet::initialise(const core::Tensor& arena, uint64_t seed) const {
  for (int i = 0; i < size(); ++i) {
    const ParamSpec& s = specs_[i];
    float* p = view(arena, i).f32();
    const int64_t n = local_numel(i);
    const uint64_t stream = init_stream(s.name);
    const int64_t row_elems = core::shape_numel(s.global_shape) / s.global_shape[0];
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < n; ++j) {
      switch (s.init) {
        case Init::kZeros:
          p[j] = 0.0f;
          break;
        case Init::kOnes:
          p[j] = 1.0f;
          break;
        case Init::kNormal: {
          const int64_t g = s.global_index(j, tp_rank_, tp_size_);
          const bool padding = s.init_rows >= 0 && g / row_elems >= s.init_rows;
          p[j] = padding ? 0.0f : s.init_std * core::standard_normal(seed, stream, g);
          break;
        }
      }
    }
  }
}

}  // namespace tessera::params
