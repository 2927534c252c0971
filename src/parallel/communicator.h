// Communicator: the one interface for collectives over a group of ranks. MpiCommunicator runs on
// host memory (CPU backend); an NCCL implementation for device memory arrives with the CUDA
// backend. Every call is a collective over this communicator: all members call it, in the same
// order, with the same counts. Each collective can be recorded to a Timeline.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tessera::parallel {

class Timeline;

enum class ReduceOp { kSum, kMax };
// Wire element type of a non-blocking all-reduce: f32, or bf16 (compression: the buffer holds
// uint16 bf16 values, summed in float on arrival, rounded to nearest even).
enum class WireType { kF32, kBF16 };

// The split of `count` elements into `size` pieces that the sharded collectives below use:
// pieces of ceil(count / size) elements, the last ones shorter or empty. Rank r's piece is
// [begin, end) of the buffer.
struct Piece {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};
Piece piece_of(int64_t count, int size, int rank);

// A pending non-blocking collective. wait() blocks until the result is in the buffer; test()
// makes progress and says whether it is. Destroying an unfinished request waits for it.
class Request {
 public:
  virtual ~Request() = default;
  virtual void wait() = 0;
  virtual bool test() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Name used in timeline events and error messages ("tp", "dp", "world").
  virtual const std::string& name() const = 0;

  // In place: buf (count) becomes the element-wise reduction over all ranks.
  virtual void all_reduce(float* buf, int64_t count, ReduceOp op) = 0;
  void all_reduce_sum(float* buf, int64_t count) { all_reduce(buf, count, ReduceOp::kSum); }
  void all_reduce_max(float* buf, int64_t count) { all_reduce(buf, count, ReduceOp::kMax); }
  // buf (count) becomes the sum over ranks divided by size(). Virtual: the host loop of the
  // default cannot touch device memory (NcclCommunicator uses ncclAvg).
  virtual void all_reduce_avg(float* buf, int64_t count);
  virtual void all_reduce(double* buf, int64_t count, ReduceOp op) = 0;
  // recv (size() * count): rank i's send (count) lands at recv + i * count. send may equal
  // recv + rank() * count (in place).
  virtual void all_gather(float* recv, const float* send, int64_t count) = 0;
  // send (size() * count): recv (count) on rank i = sum over ranks of send[i * count, +count).
  virtual void reduce_scatter(float* recv, const float* send, int64_t count) = 0;
  // The blocked pair: `blocks` all-gathers (reduce-scatters) of `count` floats per rank in one
  // call, as sequence parallelism runs one per sequence of a batch (mappings.h).
  // all_gather_blocks: send (blocks * count), recv (blocks * size() * count); rank i's block b
  // lands at recv + (b * size() + i) * count. reduce_scatter_blocks: send (blocks * size() *
  // count), recv (blocks * count); rank i's block b = sum over ranks of send[(b * size() + i) *
  // count, +count). Neither works in place. The defaults call all_gather / reduce_scatter once
  // per block; MpiCommunicator makes one MPI call (a strided datatype; a staged pack),
  // NcclCommunicator one NCCL group.
  virtual void all_gather_blocks(float* recv, const float* send, int64_t blocks, int64_t count);
  virtual void reduce_scatter_blocks(float* recv, const float* send, int64_t blocks, int64_t count);
  // buf (count bytes or floats) on every rank becomes root's.
  virtual void broadcast(float* buf, int64_t count, int root) = 0;
  virtual void broadcast_bytes(void* buf, int64_t bytes, int root) = 0;
  virtual void barrier() = 0;

  // Non-blocking in-place sum of `count` elements of `wire` type at `buf`.
  virtual std::unique_ptr<Request> all_reduce_sum_async(void* buf, int64_t count,
                                                        WireType wire) = 0;
  // Sharded pair over the pieces of `count` f32 elements at `buf` (piece_of): the non-blocking
  // reduce-scatter leaves, once complete, the sum over ranks of this rank's piece in place (the
  // rest of buf is then unspecified); the all-gather fills every other rank's piece from its
  // owner. ZeRO-1's gradient buckets and parameter gathers (optim.zero). MpiCommunicator (host)
  // and NcclCommunicator (device) have them; the defaults throw naming the fix.
  virtual std::unique_ptr<Request> reduce_scatter_sum_async(float* buf, int64_t count);
  virtual void all_gather_pieces(float* buf, int64_t count);

  // Records every collective as a timeline event (nullptr: off). Not owned.
  void set_timeline(Timeline* timeline) { timeline_ = timeline; }
  Timeline* timeline() const { return timeline_; }

 protected:
  Timeline* timeline_ = nullptr;
};

// Host-memory collectives over an MPI communicator (which it duplicates and frees).
class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, std::string name);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  MPI_Comm comm() const { return comm_; }
  // Largest element count handed to one MPI call (default INT_MAX, MPI's int count limit);
  // bigger counts are split into chunks. Tests lower it to exercise the chunked paths.
  void set_max_elements_per_call(int64_t max_elements);

  void all_reduce(float* buf, int64_t count, ReduceOp op) override;
  void all_reduce(double* buf, int64_t count, ReduceOp op) override;
  void all_gather(float* recv, const float* send, int64_t count) override;
  void reduce_scatter(float* recv, const float* send, int64_t count) override;
  void all_gather_blocks(float* recv, const float* send, int64_t blocks, int64_t count) override;
  void reduce_scatter_blocks(float* recv, const float* send, int64_t blocks,
                             int64_t count) override;
  void broadcast(float* buf, int64_t count, int root) override;
  void broadcast_bytes(void* buf, int64_t bytes, int root) override;
  void barrier() override;
  std::unique_ptr<Request> all_reduce_sum_async(void* buf, int64_t count, WireType wire) override;
  std::unique_ptr<Request> reduce_scatter_sum_async(float* buf, int64_t count) override;
  void all_gather_pieces(float* buf, int64_t count) override;

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::string name_;
  int64_t max_elements_per_call_;
  int64_t reduce_scatter_calls_ = 0;  // tags the ring reduce-scatter's messages
  int tag_ub_ = 0;                    // MPI_TAG_UB, read on first use
  std::vector<float> stage_;          // reduce_scatter_blocks' packed send, kept between calls
};

}  // namespace tessera::parallel
