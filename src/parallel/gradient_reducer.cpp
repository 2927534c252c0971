// GradientReducer: bucket packing at construction, in-order launch of non-blocking all-reduces
// as gradients become final, and the wait / average / reset of finish(). The protocol is told
// step by step in gradient_reducer.h.
#include "parallel/gradient_reducer.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "backends/backend.h"
#include "core/bf16.h"
#include "core/error.h"
#include "core/timer.h"
#include "parallel/communicator.h"
#include "parallel/node_shared_arenas.h"
#include "parallel/timeline.h"
#include "params/param_spec.h"

namespace tessera::parallel {
namespace {

constexpr int64_t kMinParallel = 1 << 16;  // elements below which a loop stays on one thread
// Elements averaged between two progress tests in finish() (1 MiB of f32).
constexpr int64_t kProgressChunk = 1 << 18;

}  // namespace

GradientReducer::GradientReducer(const params::ParamSet& params, const core::Tensor& grads,
                                 Communicator& dp_comm, ReducerOptions options, Timeline* timeline,
                                 backends::Backend* backend)
    : grads_(grads),
      backend_(grads.device() == core::Device::kCpu ? nullptr : backend),
      dp_comm_(dp_comm),
      options_(options),
      timeline_(timeline),
      dp_size_(dp_comm.size()) {
  TESSERA_ASSERT(grads.dtype() == core::DType::kF32,
                 "building the gradient reducer (the gradient arena must be f32)");
  TESSERA_ASSERT(
      grads.device() == core::Device::kCpu || (backend != nullptr && !options.compress_bf16),
      "building the gradient reducer on a device arena (it needs its backend, and "
      "bf16 compression is host-only: set parallel.compress_bf16 false)");
  TESSERA_ASSERT(!options.shard || (grads.device() == core::Device::kCpu && !options.compress_bf16),
                 "building a sharded gradient reducer (optim.zero 1 runs on host arenas without "
                 "bf16 compression)");
  TESSERA_ASSERT(grads.numel() == params.total_local_numel(),
                 "building the gradient reducer (the gradient arena must have the ParamSet's "
                 "total_local_numel elements)");
  const int n = params.size();
  offsets_.resize(n);
  numels_.resize(n);
  bucket_of_.assign(n, -1);
  ready_.assign(n, 0);
  for (int i = 0; i < n; ++i) {
    offsets_[i] = params.offset(i);
    numels_[i] = params.local_numel(i);
  }

  const int sparse = options_.sparse_param;
  if (sparse >= 0) {
    TESSERA_ASSERT(sparse < n && options_.sparse_width > 0 && options_.sparse_capacity >= 0 &&
                       numels_[sparse] % options_.sparse_width == 0 &&
                       numels_[sparse] / options_.sparse_width < (int64_t{1} << 24),
                   "building the gradient reducer's sparse rows (sparse_param must name a "
                   "parameter of whole rows of sparse_width, fewer than 2^24 rows)");
    TESSERA_ASSERT(grads.device() == core::Device::kCpu,
                   "building the gradient reducer's sparse rows (host arenas only)");
    // Step 1': the split parameter is bucket 0, alone.
    buckets_.push_back(Bucket{});
    buckets_.back().first_param = buckets_.back().last_param = sparse;
    buckets_.back().pending = 1;
    bucket_of_[sparse] = 0;
    if (dp_size_ > 1) {
      const int64_t row = 1 + options_.sparse_width;
      sparse_send_.assign(static_cast<size_t>(options_.sparse_capacity * row), 0.0f);
      sparse_recv_.assign(static_cast<size_t>(dp_size_ * options_.sparse_capacity * row), 0.0f);
    }
  }
  // Greedy packing from the last parameter to the first. The cap compares f32 bytes of the
  // parameters themselves (padding excluded), so bucket_mb means the same for both wire types.
  // Skipping the split parameter ends a bucket, so each bucket stays one run of parameters.
  const double cap_bytes = options_.bucket_mb * 1024.0 * 1024.0;
  double bucket_bytes = 0.0;
  bool new_bucket = true;
  for (int i = n - 1; i >= 0; --i) {
    if (i == sparse) {
      new_bucket = true;
      continue;
    }
    const double bytes = static_cast<double>(numels_[i]) * sizeof(float);
    if (new_bucket || bucket_bytes + bytes > cap_bytes) {
      new_bucket = false;
      buckets_.push_back(Bucket{});
      buckets_.back().first_param = i;
      bucket_bytes = 0.0;
    }
    Bucket& bucket = buckets_.back();
    bucket.last_param = i;
    bucket.pending += 1;
    bucket_bytes += bytes;
    bucket_of_[i] = num_buckets() - 1;
  }
  for (Bucket& bucket : buckets_) {
    bucket.begin = offsets_[bucket.last_param];
    bucket.count = offsets_[bucket.first_param] + numels_[bucket.first_param] - bucket.begin;
    // Invariant: registration order is arena order, so a run of parameters is one range.
    TESSERA_ASSERT(bucket.count >= 0 && bucket.begin + bucket.count <= grads.numel(),
                   "building the gradient reducer (ParamSet offsets must increase with index)");
  }
  if (options_.compress_bf16 && dp_size_ > 1) {
    wire_bf16_.assign(static_cast<size_t>(grads.numel()), 0);
  }
  if (options_.node_shared) {
    const NodeSharedArenas& shared = *options_.node_shared;
    TESSERA_ASSERT(!options_.compress_bf16 && sparse < 0 && shared.size() == dp_size_ &&
                       shared.rank() == dp_comm.rank() && shared.numel() == grads.numel(),
                   "building a node-shared gradient reducer (no bf16 compression or sparse "
                   "rows, arenas made over this dp group with the gradients' size)");
    shared_grads_ = shared.index_of(grads.raw());
    TESSERA_ASSERT(shared_grads_ >= 0,
                   "building a node-shared gradient reducer (the gradient arena must be one of "
                   "the node-shared arenas)");
  }
}

GradientReducer::~GradientReducer() = default;

std::vector<int> GradientReducer::bucket_params(int bucket) const {
  TESSERA_ASSERT(bucket >= 0 && bucket < num_buckets(), "listing a bucket's parameters");
  std::vector<int> out;
  for (int i = buckets_[bucket].first_param; i >= buckets_[bucket].last_param; --i) {
    out.push_back(i);
  }
  return out;
}

int64_t GradientReducer::wire_bytes_per_step() const {
  if (dp_size_ == 1) return 0;
  int64_t elements = 0;
  for (const Bucket& bucket : buckets_) elements += bucket.count;
  return elements * (options_.compress_bf16 ? 2 : 4) +
         static_cast<int64_t>(sparse_recv_.size() * sizeof(float));
}

bool sparse_rows_pay(int dp_size, int64_t rows_per_rank, int64_t table_rows) {
  return dp_size > 1 && 4 * static_cast<int64_t>(dp_size) * rows_per_rank <= table_rows;
}

std::vector<Piece> GradientReducer::owned_ranges() const {
  TESSERA_ASSERT(options_.shard, "listing the owned ranges (the reducer must be sharded)");
  std::vector<Piece> out;
  for (const Bucket& bucket : buckets_) {
    const Piece p = piece_of(bucket.count, dp_size_, dp_comm_.rank());
    out.push_back({bucket.begin + p.begin, bucket.begin + p.end});
  }
  return out;
}

void GradientReducer::all_gather_owned(const core::Tensor& arena) {
  TESSERA_ASSERT(options_.shard && arena.numel() == grads_.numel(),
                 "all-gathering owned pieces (a sharded reducer, an arena of the gradients' size)");
  Timeline::Scope scope(timeline_, "reducer.all_gather", "allgather", Lane::kCommunication);
  const int shared = options_.node_shared ? options_.node_shared->index_of(arena.raw()) : -1;
  if (shared >= 0 && dp_size_ > 1) {
    dp_comm_.barrier();  // every rank has written its own pieces
    copy_peer_pieces(shared, arena.f32());
    return;
  }
  for (const Bucket& bucket : buckets_) {
    dp_comm_.all_gather_pieces(arena.f32() + bucket.begin, bucket.count);
  }
}

void GradientReducer::mark_ready(int param_index) {
  TESSERA_ASSERT(param_index >= 0 && param_index < static_cast<int>(ready_.size()),
                 "marking a gradient ready (the index must name a registered parameter)");
  TESSERA_ASSERT(!ready_[param_index],
                 "marking a gradient ready (each parameter at most once per step; finish() "
                 "ends the step)");
  ready_[param_index] = 1;
  if (dp_size_ == 1) return;
  if (options_.compress_bf16) convert_to_wire(param_index);
  Bucket& bucket = buckets_[bucket_of_[param_index]];
  bucket.pending -= 1;
  if (!options_.overlap || options_.node_shared) return;
  launch_full_buckets();
  progress();
}

void GradientReducer::add_sparse_rows(const int32_t* row_ids, const float* values, int64_t n) {
  TESSERA_ASSERT(options_.sparse_param >= 0 && n >= 0,
                 "adding sparse gradient rows (the reducer needs options.sparse_param)");
  TESSERA_ASSERT(sparse_rows_ + n <= options_.sparse_capacity,
                 "adding sparse gradient rows (at most sparse_capacity rows per step)");
  const int64_t width = options_.sparse_width;
  const int64_t rows = numels_[options_.sparse_param] / width;
  if (dp_size_ == 1) {
    sparse_rows_ += n;
    // The average over one rank: the rows themselves, added now.
    float* grad = grads_.f32() + offsets_[options_.sparse_param];
    for (int64_t k = 0; k < n; ++k) {
      if (row_ids[k] < 0 || row_ids[k] >= rows) continue;
      float* dst = grad + row_ids[k] * width;
      const float* src = values + k * width;
      for (int64_t j = 0; j < width; ++j) dst[j] += src[j];
    }
    return;
  }
  for (int64_t k = 0; k < n; ++k) {
    float* dst = sparse_send_.data() + (sparse_rows_ + k) * (1 + width);
    const bool inside = row_ids[k] >= 0 && row_ids[k] < rows;
    dst[0] = inside ? static_cast<float>(row_ids[k]) : -1.0f;
    if (inside) std::memcpy(dst + 1, values + k * width, width * sizeof(float));
  }
  sparse_rows_ += n;
}

void GradientReducer::gather_sparse_rows() {
  Timeline::Scope scope(timeline_, "sparse rows allgather", "allgather", Lane::kCommunication);
  const int64_t row = 1 + options_.sparse_width;
  for (int64_t k = sparse_rows_; k < options_.sparse_capacity; ++k) {
    sparse_send_[k * row] = -1.0f;
  }
  dp_comm_.all_gather(sparse_recv_.data(), sparse_send_.data(), options_.sparse_capacity * row);
}

void GradientReducer::add_gathered_rows() {
  const int64_t width = options_.sparse_width, row = 1 + width;
  const float scale = options_.average ? 1.0f / static_cast<float>(dp_size_) : 1.0f;
  float* grad = grads_.f32() + offsets_[options_.sparse_param];
  const int64_t n = dp_size_ * options_.sparse_capacity;
  for (int64_t k = 0; k < n; ++k) {
    const float* src = sparse_recv_.data() + k * row;
    if (src[0] < 0.0f) continue;
    float* dst = grad + static_cast<int64_t>(src[0]) * width;
    for (int64_t j = 0; j < width; ++j) dst[j] += src[1 + j] * scale;
  }
}

void GradientReducer::poll() {
  if (dp_size_ > 1 && options_.overlap && !options_.node_shared) progress();
}

void GradientReducer::progress() {
  // Testing the oldest unfinished request drives MPI's progress engine for all of them.
  while (next_complete_ < next_start_ && buckets_[next_complete_].request->test()) {
    complete(next_complete_++);
  }
}

void GradientReducer::finish() {
  Timeline::Scope scope(timeline_, "reducer.finish", "allreduce", Lane::kCompute);
  if (dp_size_ == 1) {
    reset();
    return;
  }
  for (int i = 0; i < static_cast<int>(ready_.size()); ++i) {
    if (ready_[i]) continue;
    ready_[i] = 1;
    if (options_.compress_bf16) convert_to_wire(i);
    buckets_[bucket_of_[i]].pending -= 1;
  }
  if (options_.node_shared) {
    finish_node_shared();
    reset();
    return;
  }
  launch_full_buckets();
  // Invariant: every bucket is full now, so every bucket has started.
  TESSERA_ASSERT(next_start_ == num_buckets(), "finishing the gradient reduction");
  if (options_.sparse_param >= 0) gather_sparse_rows();

  const float scale = options_.average ? 1.0f / static_cast<float>(dp_size_) : 1.0f;
  float* arena = grads_.f32();
  for (int b = 0; b < num_buckets(); ++b) {
    Bucket& bucket = buckets_[b];
    if (b >= next_complete_) {
      bucket.request->wait();
      complete(b);
      next_complete_ = b + 1;
    }
    if (!options_.average && !options_.compress_bf16) {
      // The sum is the average: nothing to write.
      bucket.request.reset();
      continue;
    }
    if (options_.shard) {
      // Only this rank's piece holds the sum; the average of it, padding included (its sums
      // are of zeros).
      const Piece p = piece_of(bucket.count, dp_size_, dp_comm_.rank());
      float* grad = arena + bucket.begin + p.begin;
      const int64_t n = p.size();
#pragma omp parallel for simd schedule(static) if (n >= kMinParallel)
      for (int64_t k = 0; k < n; ++k) grad[k] *= scale;
      bucket.request.reset();
      continue;
    }
    if (backend_ != nullptr) {
      // Device arena: the request's wait ordered the sum before later work on any stream.
      for (int i = bucket.first_param; i >= bucket.last_param; --i) {
        backend_->scale_inplace(arena + offsets_[i], scale, numels_[i]);
      }
      bucket.request.reset();
      continue;
    }
    // The average: sum * (1 / dp_size), as Communicator::all_reduce_avg computes it. Only the
    // parameters' own elements are written (the padding between them is left alone). The pass
    // runs in chunks with a progress test between them, so later buckets move meanwhile.
    for (int i = bucket.first_param; i >= bucket.last_param; --i) {
      for (int64_t chunk = 0; chunk < numels_[i]; chunk += kProgressChunk) {
        float* grad = arena + offsets_[i] + chunk;
        const int64_t n = std::min(kProgressChunk, numels_[i] - chunk);
        if (options_.compress_bf16) {
          const uint16_t* wire = wire_bf16_.data() + offsets_[i] + chunk;
#pragma omp parallel for simd schedule(static) if (n >= kMinParallel)
          for (int64_t k = 0; k < n; ++k) grad[k] = core::from_bf16(wire[k]) * scale;
        } else {
#pragma omp parallel for simd schedule(static) if (n >= kMinParallel)
          for (int64_t k = 0; k < n; ++k) grad[k] *= scale;
        }
        progress();
      }
    }
    bucket.request.reset();
  }
  if (options_.sparse_param >= 0) add_gathered_rows();
  reset();
}

void GradientReducer::copy_peer_pieces(int shared, float* mine) const {
  const int me = dp_comm_.rank();
  for (const Bucket& bucket : buckets_) {
    for (int q = 0; q < dp_size_; ++q) {
      if (q == me) continue;
      const Piece p = piece_of(bucket.count, dp_size_, q);
      const float* theirs = options_.node_shared->peer(q, shared) + bucket.begin + p.begin;
      float* dst = mine + bucket.begin + p.begin;
      const int64_t n = p.size();
#pragma omp parallel for schedule(static) if (n >= kMinParallel)
      for (int64_t c = 0; c < n; c += kProgressChunk) {
        std::memcpy(dst + c, theirs + c,
                    static_cast<size_t>(std::min(kProgressChunk, n - c)) * sizeof(float));
      }
    }
  }
}

void GradientReducer::finish_node_shared() {
  const NodeSharedArenas& shared = *options_.node_shared;
  const float scale = options_.average ? 1.0f / static_cast<float>(dp_size_) : 1.0f;
  const int me = dp_comm_.rank();
  dp_comm_.barrier();  // every rank's gradients are final
  {
    Timeline::Scope scope(timeline_, "node-shared reduce", "allreduce", Lane::kCompute);
    // Chunks small enough to stay in L1 while every rank's values are added in rank order.
    constexpr int64_t kChunk = 1024;
    for (const Bucket& bucket : buckets_) {
      const Piece p = piece_of(bucket.count, dp_size_, me);
      const int64_t offset = bucket.begin + p.begin, n = p.size();
      float* dst = grads_.f32() + offset;
#pragma omp parallel for schedule(static) if (n >= kMinParallel)
      for (int64_t c = 0; c < n; c += kChunk) {
        const int64_t m = std::min(kChunk, n - c);
        alignas(64) float acc[kChunk];
        const float* first = shared.peer(0, shared_grads_) + offset + c;
        for (int64_t k = 0; k < m; ++k) acc[k] = first[k];
        for (int q = 1; q < dp_size_; ++q) {
          const float* theirs = shared.peer(q, shared_grads_) + offset + c;
#pragma omp simd
          for (int64_t k = 0; k < m; ++k) acc[k] += theirs[k];
        }
        if (options_.average) {
          for (int64_t k = 0; k < m; ++k) dst[c + k] = acc[k] * scale;
        } else {
          std::memcpy(dst + c, acc, static_cast<size_t>(m) * sizeof(float));
        }
      }
    }
  }
  dp_comm_.barrier();  // every rank is done reading the others' gradients
  if (!options_.shard) {
    // Replicated (optim.zero 0): every rank needs every sum. The others' pieces are final since
    // the barrier above; copy them, then wait until every rank has, before any rank writes its
    // arena again (the next step's zeroing).
    Timeline::Scope scope(timeline_, "node-shared gather", "allgather", Lane::kCompute);
    copy_peer_pieces(shared_grads_, grads_.f32());
    dp_comm_.barrier();
  }
}

void GradientReducer::convert_to_wire(int param_index) {
  const float* grad = grads_.f32() + offsets_[param_index];
  uint16_t* wire = wire_bf16_.data() + offsets_[param_index];
  const int64_t n = numels_[param_index];
#pragma omp parallel for simd schedule(static) if (n >= kMinParallel)
  for (int64_t k = 0; k < n; ++k) wire[k] = core::to_bf16(grad[k]);
}

void GradientReducer::launch_full_buckets() {
  while (next_start_ < num_buckets() && buckets_[next_start_].pending == 0) start(next_start_++);
}

void GradientReducer::start(int b) {
  Bucket& bucket = buckets_[b];
  bucket.start_us = timeline_ ? core::now_us() : 0.0;
  void* buf = options_.compress_bf16 ? static_cast<void*>(wire_bf16_.data() + bucket.begin)
                                     : static_cast<void*>(grads_.f32() + bucket.begin);
  if (options_.shard) {
    bucket.request = dp_comm_.reduce_scatter_sum_async(grads_.f32() + bucket.begin, bucket.count);
    return;
  }
  bucket.request = dp_comm_.all_reduce_sum_async(
      buf, bucket.count, options_.compress_bf16 ? WireType::kBF16 : WireType::kF32);
}

void GradientReducer::complete(int b) {
  if (!timeline_) return;
  const Bucket& bucket = buckets_[b];
  const int64_t bytes = bucket.count * (options_.compress_bf16 ? 2 : 4);
  timeline_->record("bucket " + std::to_string(b) + " allreduce", "allreduce", Lane::kCommunication,
                    bucket.start_us, core::now_us(),
                    "{\"bytes\": " + std::to_string(bytes) + ", \"params\": " +
                        std::to_string(bucket.first_param - bucket.last_param + 1) + "}");
}

void GradientReducer::reset() {
  for (Bucket& bucket : buckets_) {
    bucket.pending = bucket.first_param - bucket.last_param + 1;
    bucket.request.reset();
  }
  ready_.assign(ready_.size(), 0);
  next_start_ = 0;
  next_complete_ = 0;
  sparse_rows_ = 0;
}

}  // namespace tessera::parallel
