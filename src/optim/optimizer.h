// The model's optimizer state and step: AdamW moments in twins of the parameter arena, and global
// grad-norm clipping driven by the ParamSpec table.
#pragma once

#include <vector>

#include "core/config.h"
#include "core/tensor.h"
#include "parallel/communicator.h"
#include "params/param_spec.h"

namespace tessera::backends {
class Backend;
}

namespace tessera::optim {

// Global L2 norm of all gradients; a tp-replicated parameter is counted once. With max_norm > 0
// and the norm above it, scales every gradient by max_norm / (norm + 1e-6) (PyTorch's
// clip_grad_norm_). Returns the norm before clipping. Gradients must already be dp-averaged.
// With tp_comm (size > 1) a collective over tp_comm: sharded squares are summed over tp.
// grads live on `backend`'s device (nullptr: the CPU backend); tp_comm reduces host doubles.
double clip_grad_norm(const params::ParamSet& params, const core::Tensor& grads, double max_norm,
                      parallel::Communicator* tp_comm = nullptr,
                      backends::Backend* backend = nullptr);

// ZeRO-1: one run of parameter `param` inside a rank's owned arena ranges: arena elements
// [offset, offset + count), whose moments sit at [moment_offset, +count) of the rank's compact m
// and v. The padding between parameters is owned (and carried in the moments) but never updated.
struct ShardSegment {
  int param = 0;
  int64_t offset = 0;
  int64_t count = 0;
  int64_t moment_offset = 0;
};

// The segments of `owned` (ascending, disjoint arena ranges), in arena order.
std::vector<ShardSegment> shard_segments(const params::ParamSet& params,
                                         const std::vector<parallel::Piece>& owned);

// clip_grad_norm for a sharded optimizer: each rank holds the dp-averaged gradients of its
// segments only, so squares are summed over them, then over dp_comm (and the sharded ones over
// tp_comm); only the owned segments are scaled. Host arenas. Collective over dp_comm and tp_comm.
double clip_grad_norm_sharded(const params::ParamSet& params, const core::Tensor& grads,
                              const std::vector<ShardSegment>& segments, double max_norm,
                              parallel::Communicator* tp_comm, parallel::Communicator& dp_comm);

class AdamW {
 public:
  // Moments on `backend`'s device (nullptr: the CPU backend), zeroed; borrowed references.
  explicit AdamW(const params::ParamSet& params, backends::Backend* backend = nullptr);
  // ZeRO-1 (optim.zero 1), host arenas: moments only for the arena ranges `owned` (the sharded
  // GradientReducer's owned_ranges()), compact; step() updates only the owned weights.
  AdamW(const params::ParamSet& params, const std::vector<parallel::Piece>& owned);
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  // One update of every parameter with learning rate `lr`; `step` is 1-based (bias correction).
  // Decay applies to parameters whose spec has weight_decay.
  void step(const core::Tensor& weights, const core::Tensor& grads, double lr, int64_t step,
            const core::OptimConfig& optim);
  // The moments. Replicated: in the parameter arena's layout (checkpoints read and write these).
  // Sharded: compact, the owned ranges one after another (segments() maps them to parameters);
  // checkpoints move them through copy_owned_out / copy_owned_in, one parameter at a time.
  const core::Tensor& m() const { return m_; }
  const core::Tensor& v() const { return v_; }

  bool sharded() const { return sharded_; }
  const std::vector<ShardSegment>& segments() const { return segments_; }
  // Bytes of moments this rank holds.
  int64_t state_bytes() const { return (m_.numel() + v_.numel()) * 4; }

  // Sharded only. Moment `which` (0: m, 1: v) of parameter `param` in the parameter's local
  // layout (params.local_numel(param) elements at `shard`): copy_owned_out writes the elements
  // this rank owns and leaves the others as they are; copy_owned_in takes the owned ones.
  void copy_owned_out(int param, int which, float* shard) const;
  void copy_owned_in(int param, int which, const float* shard);

 private:
  const params::ParamSet& params_;
  backends::Backend& backend_;
  core::Tensor m_, v_;  // sharded: compact, the owned ranges one after another
  bool sharded_ = false;
  std::vector<ShardSegment> segments_;
};

}  // namespace tessera::optim
