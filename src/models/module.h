// What every module of one model shares: the backend it runs on, the tp group its shards talk
// over, the parameter table and the two arenas (weights, gradients), plus the activation plan
// that sizes one arena for all modules' saved activations at construction (DESIGN.md 1: no
// allocation inside the step loop).
#pragma once

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "core/act.h"
#include "core/tensor.h"
#include "params/param_spec.h"

namespace tessera::backends {
class Backend;
}
namespace tessera::parallel {
class Communicator;
}

namespace tessera::models {

// The rows of one module call: B sequences of T tokens, (B, T) row-major (decode: N independent
// rows, Rows::flat(N)). Under sequence parallelism (seq_shards = tp size > 1; Korthikanti et al.
// 2022) the tensors outside the tp regions (the embedding's output, layernorms, the residual
// stream, the head's input) hold only this tp rank's T / tp rows of each sequence, (B, T / tp):
// n_local() rows; the tp regions (attention, the MLP's hidden units, the logits) always see all
// n() rows. The column-parallel input gathers them (gather_from_sequence), the row-parallel output
// and the embedding reduce-scatter into them (reduce_scatter_to_sequence). Decode never shards.
struct Rows {
  int64_t B = 0;
  int64_t T = 0;
  int seq_shards = 1;  // 1: every rank holds all rows
  static Rows flat(int64_t N) { return {N, 1, 1}; }
  bool seq_sharded() const { return seq_shards > 1; }
  int64_t n() const { return B * T; }
  int64_t n_local() const { return B * (T / seq_shards); }
};

// Shared scratch of sequence parallelism: a tp region's gathered input (or a row-parallel
// layer's partial output) and the full-sequence gradient at it, (B*T, C) each. Contents live
// for one module call (a column-parallel backward gathers its input again rather than keeping it
// per layer, as Megatron-LM does).
struct SequenceScratch {
  core::Tensor full;   // (B*T, C)
  core::Tensor dfull;  // (B*T, C)
};

// Borrowed references, alive as long as the Gpt that owns them.
struct ModelContext {
  backends::Backend& backend;
  // Collective over tp_comm: the module's shards; size 1 is "no tensor parallelism" (every
  // mapping and reduction is then a no-op, so modules never test for it).
  parallel::Communicator& tp_comm;
  const params::ParamSet& params;
  const core::Tensor& weights;  // this rank's parameter shards, on the backend's device
  const core::Tensor& grads;    // the gradient twin (equal offsets); empty for inference
  int tp_rank = 0;
  int tp_size = 1;
  // Built for decode only (Gpt::Purpose::kInference): modules leave out what only forward and
  // backward need (their gradients are then null).
  bool inference = false;
  // Set when the model runs training calls sequence parallel (Rows::seq_sharded); else null.
  SequenceScratch* seq = nullptr;
  // The precision of the activations modules keep (train.dtype: bf16 makes a training model's
  // bf16; gradients, statistics, parameters and logits are always fp32).
  core::DType act = core::DType::kF32;
  // With bf16 activations: fp32 rows (B*T, C) where a module sums before it rounds once (the
  // embedding's lookup and positions, a row-parallel layer's partial products and its bias), and
  // where a sequence-parallel input is widened before it is gathered. Null with fp32 ones.
  const core::Tensor* act_f32 = nullptr;
  // act_f32 as fp32 rows for `numel` elements (checked).
  float* f32_rows(int64_t numel) const;
  // Called after each linear layer's backward GEMMs when set (Gpt::set_backward_poll): the
  // data-parallel reducer's progress test, since MPI moves a started all-reduce only inside MPI
  // calls (no progress thread).
  const std::function<void()>* backward_poll = nullptr;
  void poll() const {
    if (backward_poll != nullptr && *backward_poll) (*backward_poll)();
  }

  // Device pointers of parameter i's shard and its gradient (resolved once, at construction).
  float* weight(int i) const { return weights.f32() + params.offset(i); }
  float* grad(int i) const { return grads.defined() ? grads.f32() + params.offset(i) : nullptr; }
};

// Collects (tensor, shape, dtype) requests, then allocates one zeroed arena on the backend and
// points every requested tensor at its view (each rounded to 64 bytes, so every view is 64-byte
// aligned).
// Requests follow each other in the arena, unless rewind() sends later ones back over earlier
// ones: an inference model's layers share one set of activations (Gpt::Purpose::kInference).
class ArenaPlan {
 public:
  void add(core::Tensor* tensor, core::Shape shape, core::DType dtype = core::DType::kF32);
  // Where the next request goes (bytes into the arena).
  int64_t mark() const { return cursor_; }
  // The next requests go from `mark` on, over the ones added since it: only for tensors that
  // are never live at the same time as those.
  void rewind(int64_t mark) { cursor_ = mark; }
  // Allocates and fills every requested tensor; returns the arena (keep it alive).
  core::Tensor allocate(backends::Backend& backend);

 private:
  struct Request {
    core::Tensor* tensor;
    core::Shape shape;
    core::DType dtype;
    int64_t offset;  // bytes
  };
  std::vector<Request> requests_;
  int64_t cursor_ = 0, end_ = 0;
};

}  // namespace tessera::models
