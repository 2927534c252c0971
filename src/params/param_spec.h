// The ParamSpec table: one row per parameter (name, global shape, how it is split over tp, how it
// is initialised, whether it decays). It drives allocation, init, checkpoints, clipping and the
// gradient reducer. A rank's parameters live in one arena; gradients in a twin with equal offsets.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tessera::params {

enum class Init { kNormal, kZeros, kOnes };

struct ParamSpec {
  std::string name;          // stable, e.g. "h.0.attn.qkv.weight"
  core::Shape global_shape;  // shape of the full (unsharded) tensor
  int split_dim = -1;        // dimension split over tp; -1: replicated on every tp rank
  int split_parts = 1;       // the split dim is this many equal blocks, each split over tp
                             // (fused qkv: 3, so a rank holds its heads' q, k and v)
  Init init = Init::kZeros;
  float init_std = 0.0f;      // for kNormal
  int64_t init_rows = -1;     // kNormal: rows (dim 0) at or past this are zero (vocab padding)
  bool weight_decay = false;  // AdamW decay: matrices and embeddings yes; biases, layernorms no

  bool replicated() const { return split_dim < 0; }
  // Shape of tp rank's shard. Precondition: divisibility checked by validate_split.
  core::Shape local_shape(int tp_size) const;
  // Global flat index (row-major in global_shape) of element `local_index` of tp_rank's shard.
  int64_t global_index(int64_t local_index, int tp_rank, int tp_size) const;
};

// Philox stream of a parameter's init: a hash of its name, so the numbers of one parameter never
// depend on which other parameters exist or on their order.
uint64_t init_stream(const std::string& name);

// Parameters (or gradients, or optimizer moments) of one rank: one arena, a view per spec.
class ParamSet {
 public:
  ParamSet(std::vector<ParamSpec> specs, int tp_rank, int tp_size);
  ParamSet(const ParamSet&) = delete;
  ParamSet& operator=(const ParamSet&) = delete;

  const std::vector<ParamSpec>& specs() const { return specs_; }
  int size() const { return static_cast<int>(specs_.size()); }
  int index_of(const std::string& name) const;  // -1 if absent
  // Views into `arena` (params(), or a twin allocated with make_twin()).
  core::Tensor view(const core::Tensor& arena, int i) const;
  // view(arena, i).f32() without making a Tensor (whose shape is a heap vector): the step loop's
  // optimizer and clipping use it, so a training step allocates nothing.
  float* f32(const core::Tensor& arena, int i) const;
  int64_t offset(int i) const { return offsets_[i]; }
  int64_t local_numel(int i) const { return core::shape_numel(local_shapes_[i]); }
  const core::Shape& local_shape(int i) const { return local_shapes_[i]; }
  int64_t total_local_numel() const { return total_; }
  // Parameters counted once over the whole model (padding rows excluded if `exclude_padding`).
  int64_t global_param_count(bool exclude_padding) const;
  int tp_rank() const { return tp_rank_; }
  int tp_size() const { return tp_size_; }

  core::Tensor make_twin() const;  // a zeroed arena with this layout

  // Fills `arena` from the specs: each element is a pure function of (seed, name, global index).
  void initialise(const core::Tensor& arena, uint64_t seed) const;

 private:
  std::vector<ParamSpec> specs_;
  std::vector<core::Shape> local_shapes_;
  std::vector<int64_t> offsets_;
  int64_t total_ = 0;
  int tp_rank_ = 0;
  int tp_size_ = 1;
};

}  // namespace tessera::params
