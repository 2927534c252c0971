// GradientReducer: Horovod-style fused data-parallel gradient averaging. Gradients are grouped
// into buckets in reverse registration order; a full bucket is all-reduced (non-blocking) over
// dp_comm while backward goes on, and finish() waits and leaves the dp average in the arena.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"
#include "parallel/communicator.h"

namespace tessera::backends {
class Backend;
}
namespace tessera::params {
class ParamSet;
}

namespace tessera::parallel {

class NodeSharedArenas;
class Timeline;

struct ReducerOptions {
  double bucket_mb = 25.0;     // cap of one bucket, MiB of f32 gradient (2^20 bytes)
  bool overlap = true;         // start a bucket's all-reduce as soon as it is full (else: finish)
  bool compress_bf16 = false;  // bf16 on the wire: half the bytes, ~3 significant digits
  bool shard = false;          // ZeRO-1 (optim.zero 1): reduce-scatter instead of all-reduce
  // false: finish() leaves the sum over dp, no averaging pass over the arena; the caller has
  // scaled each rank's gradient by 1 / dp_size already (through the loss scale: the same bits
  // as averaging afterwards when dp_size is a power of two, since backward is linear in it).
  bool average = true;
  // Split gradient (the tied token embedding): the parameter whose gradient is dense but for
  // rows handed to add_sparse_rows (-1: none). Its dense part is bucket 0, alone, so it starts
  // as soon as it is marked; the rows travel in one all-gather in finish().
  int sparse_param = -1;
  int64_t sparse_capacity = 0;  // rows per rank per step (at most)
  int64_t sparse_width = 0;     // elements per row; the gradient is (numel / width, width)
  // Every dp rank on one node (parallel.node_shared): the gradient arena (and, sharded, the
  // weights given to all_gather_owned) are arenas of this object, so finish() sums each rank's
  // pieces straight from the others' arenas (and, not sharded, copies back the others' summed
  // pieces) and all_gather_owned copies theirs: no MPI copies, nothing in flight during
  // backward. Not with sparse_param or compress_bf16.
  std::shared_ptr<NodeSharedArenas> node_shared = nullptr;
};

// Whether exchanging `rows_per_rank` rows of a `table_rows`-row gradient as sparse rows (an
// all-gather of dp_size x rows_per_rank rows) beats leaving them in the dense all-reduce: only
// when the gathered rows are at most a quarter of the table, which also bounds the reducer's
// extra buffer to a quarter of the table's gradient.
bool sparse_rows_pay(int dp_size, int64_t rows_per_rank, int64_t table_rows);

// Averages a rank's gradient arena over the data-parallel group, one step at a time.
//
// Protocol (every member of dp_comm builds the reducer from the same ParamSet layout and runs
// the same steps; only the order of mark_ready calls may differ between ranks):
//  1. Construction (no communication). Parameters are walked from the last registered to the
//     first and packed greedily into buckets of at most bucket_mb MiB of f32 gradient; a
//     parameter larger than the cap is a bucket of its own. Bucket 0 thus holds the last
//     layers, whose gradients backward finishes first. A bucket is a run of consecutive
//     parameters, so its gradients are one contiguous range of the arena (ParamSet offsets,
//     the alignment padding between them included): that range is the bucket's fusion buffer.
//     f32 buckets are all-reduced in place in the arena, so nothing is copied in or out (the
//     copies Horovod needs for scattered tensors cost ~2 memory passes here: see
//     bench/bench_reducer.cpp). With compress_bf16 a bf16 fusion buffer with the arena's layout
//     is allocated here, once.
//  2. mark_ready(i), once per parameter per step, when its gradient is final (after the last
//     micro-batch). bf16: the gradient is rounded (to nearest even) into the bf16 buffer. The
//     parameter's bucket counts one pending parameter less.
//  3. Launch, in bucket order. With overlap on, mark_ready starts every bucket that is full and
//     whose predecessors have all started (all_reduce_sum_async over dp_comm). Bucket b is the
//     b-th collective on dp_comm on every rank, whatever order the ranks marked parameters in:
//     MPI matches non-blocking collectives by issue order. (Horovod agrees on an order through
//     its coordinator; a fixed bucket order needs no negotiation.)
//  4. Progress. Each mark_ready, and each poll() (the model calls it after every linear layer's
//     backward GEMMs), tests the oldest unfinished all-reduce: OpenMPI has no progress thread,
//     so a started all-reduce moves only inside MPI calls, and a ring all-reduce needs a few
//     calls on both ranks per step of the ring.
//  5. finish(): parameters never marked are marked now, buckets not started are started in
//     order (all of them when overlap is off), then, bucket by bucket in order, it waits and
//     writes sum / dp_size into each parameter's gradient (with options.average false it only
//     waits: the sum is the average already, and one pass over the arena is saved).
//  6. Reset: every parameter is unmarked and every bucket empty; the next step starts at 2.
// With dp_size 1, steps 3-5 are skipped: the average over one rank is the gradient itself
// (so compress_bf16 does not round it either).
//
// Split gradient (options.sparse_param = p; the tied embedding wte, whose LM-head part is dense
// and final right after the head's backward, while the lookup's part, final only at the very
// end, touches just the rows of the step's tokens):
//  1'. Construction: bucket 0 is parameter p alone; the others are packed as in 1, after it. A
//     send buffer of sparse_capacity rows and a receive buffer of dp x sparse_capacity rows
//     (each row: its index, then sparse_width values) are allocated once.
//  2'. The caller marks p as soon as its dense part is final (bucket 0 starts then) and hands the
//     late part to add_sparse_rows(ids, values, n) instead of adding it to the gradient; the
//     rows are copied into the send buffer (any number of calls, at most sparse_capacity rows
//     in all per step).
//  5'. finish(), after starting every bucket: one all-gather over dp_comm of every rank's send
//     buffer (unused rows carry index -1), whatever each rank added. Once bucket 0 is averaged,
//     the gathered rows are added, each value times 1 / dp_size (times 1 with options.average
//     false: the caller scaled the rows too), in rank order and, within a
//     rank, in the order added. So every rank computes the same sum in the same order: the
//     result is identical on every rank, and equals the dense path's average up to float
//     rounding (the sum is associated differently). Rows whose index is outside the gradient's
//     rows are skipped (a tp rank's vocabulary shard sees only its own rows).
// With dp_size 1, add_sparse_rows adds the rows to the gradient at once.
//
// Sharded (ZeRO-1, options.shard): each bucket's range is split into dp pieces (piece_of in
// communicator.h) and reduce-scattered instead of all-reduced, so after finish() a rank holds
// the dp average only in the pieces it owns (owned_ranges(): one per bucket, in bucket order);
// the rest of the arena is unspecified. The optimizer updates the owned weights and
// all_gather_owned() then gives every rank every piece. The wire bytes per rank are those of
// the all-reduce (a reduce-scatter plus an all-gather is how rings all-reduce anyway).
// Node-shared (options.node_shared): mark_ready and poll only count; finish() is a barrier
// (every rank's gradients final), then each rank writes into its own pieces the sum of every
// rank's gradient there, read from their arenas in rank order (0, 1, ..., dp - 1), then a second
// barrier (every rank is done reading the others). Not sharded (every rank needs every sum),
// each rank then copies the others' summed pieces from their arenas, and a third barrier keeps
// any rank from writing its arena again before every rank has copied from it. all_gather_owned on a
// node-shared arena is a barrier (every rank has updated its pieces), then each rank copies the
// others' pieces from their arenas. A rank writes its pieces of a shared arena only between these
// barriers, and the others read them only after the next one, so no further synchronisation is
// needed; the trainer's other collectives come in between anyway.
// Between mark_ready(i) and finish() the caller neither reads nor writes gradient i: its arena
// range may be under an in-flight all-reduce. The arena's padding between parameters is summed
// too (it is never read as a gradient). No other collective may be issued on dp_comm between
// the first mark_ready of a step and finish().
// Timeline (optional, not owned): per bucket and step an event "bucket <b> allreduce" (lane
// communication, category "allreduce") from its start until the reducer sees it complete, and
// "reducer.finish" (lane compute) around finish(). A timeline set on dp_comm itself adds its
// own "<name>.all_reduce_async" events, distinct from these.
// Not thread-safe: call from the thread that runs the step loop.
class GradientReducer {
 public:
  // Registers the parameters of `params` in their order; `grads` is the gradient arena with the
  // ParamSet layout (f32, params.total_local_numel() elements). `grads` shares its storage with
  // the caller's arena; dp_comm and timeline must outlive the reducer. A device arena (grads on
  // a device backend, dp_comm a device communicator such as NCCL) needs `backend`, which then
  // does the averaging; compress_bf16 is host-only (TESSERA_ASSERT).
  GradientReducer(const params::ParamSet& params, const core::Tensor& grads, Communicator& dp_comm,
                  ReducerOptions options, Timeline* timeline = nullptr,
                  backends::Backend* backend = nullptr);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Step 2-4 of the protocol for parameter `param_index` (0 <= index < params.size(), at most
  // once per step; both asserted). Not a collective on its own, but it may start collectives on
  // dp_comm, so every rank marks every parameter (or leaves it to finish()).
  void mark_ready(int param_index);
  // Step 2' (options.sparse_param >= 0): rows of that parameter's gradient, viewed as
  // (numel / sparse_width, sparse_width): row_ids (n) and values (n, sparse_width) on the host,
  // copied. Ids outside [0, numel / sparse_width) are skipped. Not a collective.
  void add_sparse_rows(const int32_t* row_ids, const float* values, int64_t n);
  // Step 4 between marks: tests the oldest unfinished all-reduce (so MPI moves every started
  // one); nothing when none is in flight or overlap is off. Cheap: call it between GEMMs.
  void poll();
  // Collective over dp_comm. Steps 5-6: on return every gradient is the dp average (with
  // options.average false, the dp sum).
  void finish();

  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  // Parameter indices of bucket b, in the order they were packed (descending).
  std::vector<int> bucket_params(int bucket) const;
  // All-reduce payload per step on each rank (bucket ranges x wire element size), plus the
  // sparse rows' all-gather (dp_size x sparse_capacity rows of 1 + sparse_width f32); 0 when
  // dp_size is 1 (nothing is sent).
  int64_t wire_bytes_per_step() const;

  // Sharded only. Arena ranges [begin, end) whose dp average this rank holds after finish().
  std::vector<Piece> owned_ranges() const;
  // Sharded only; collective over dp_comm. Every piece of `arena` (a twin of the gradient arena:
  // the weights, an AdamW moment) takes its owner's values.
  void all_gather_owned(const core::Tensor& arena);

 private:
  struct Bucket {
    int first_param = 0;               // highest parameter index (packed first)
    int last_param = 0;                // lowest parameter index
    int64_t begin = 0;                 // arena offset of the range (offset of last_param)
    int64_t count = 0;                 // elements in the range, padding between parameters included
    int pending = 0;                   // parameters not yet marked this step
    std::unique_ptr<Request> request;  // in flight when set
    double start_us = 0.0;
  };

  void convert_to_wire(int param_index);
  void launch_full_buckets();
  void progress();  // tests the oldest unfinished all-reduce; records those that completed
  void start(int bucket);
  void complete(int bucket);  // records the timeline event of a finished all-reduce
  void reset();
  void gather_sparse_rows();  // step 5': the all-gather
  void add_gathered_rows();   // step 5': into the averaged gradient, in rank order
  void finish_node_shared();  // finish() with options.node_shared: the barriers and the sums
  // Copies every other rank's pieces of node-shared arena `shared` into `mine` (this rank's).
  void copy_peer_pieces(int shared, float* mine) const;

  core::Tensor grads_;
  backends::Backend* backend_;  // device arenas only
  Communicator& dp_comm_;
  ReducerOptions options_;
  Timeline* timeline_;
  int dp_size_ = 1;
  std::vector<int64_t> offsets_, numels_;  // per parameter, from the ParamSet
  std::vector<int> bucket_of_;             // per parameter
  std::vector<char> ready_;                // per parameter: marked this step
  std::vector<Bucket> buckets_;
  std::vector<uint16_t> wire_bf16_;  // bf16 fusion buffer (arena layout), if compressing
  int next_start_ = 0;               // buckets [0, next_start_) have started this step
  int next_complete_ = 0;            // buckets [0, next_complete_) have completed
  // Sparse rows: (capacity, 1 + width) floats each row, its index (exact below 2^24) first.
  std::vector<float> sparse_send_, sparse_recv_;
  int64_t sparse_rows_ = 0;  // rows added this step
  int shared_grads_ = -1;    // the gradient arena's index in options.node_shared
};

}  // namespace tessera::parallel
