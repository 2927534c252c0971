// NcclCommunicator: the Communicator interface on DEVICE memory through NCCL, built from an MPI
// communicator (the ProcessGrid's groups) by broadcasting the NCCL unique id over it. Compiled into
// tessera_cuda (src/backends/cuda/nccl_communicator.cu); this header needs no CUDA or NCCL headers.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>

#include "backends/cuda/stream.h"
#include "parallel/communicator.h"

struct ncclComm;
struct CUevent_st;

namespace tessera::parallel {

// Every buffer handed to a verb is device memory of the CUDA device that was current when the
// communicator was made; counts are elements, as in nccl.h, and every rank passes the same ones.
//
// Streams and ordering. Collectives run on the communicator's own stream (non-blocking, created
// here). Each verb first makes that stream wait for all work already enqueued on the *compute
// stream* (set_compute_stream; default nullptr, the legacy default stream), so kernels that wrote
// a buffer before the call are finished before NCCL reads it.
//  - Blocking verbs (all_reduce, all_gather, reduce_scatter, broadcast, barrier) return once the
//    result is in the buffer: the host waits, as MpiCommunicator's do.
//  - all_reduce_sum_async and reduce_scatter_sum_async return at once; Request::wait() blocks
//    the host until the result is in the buffer (so work enqueued afterwards on any stream sees
//    it); Request::test() polls. A request must be finished (or destroyed, which waits) before
//    its communicator is destroyed.
// While it waits the host polls the stream and ncclCommGetAsyncError, so a failed peer surfaces
// as an error here instead of a hang.
//
// Errors: a failing NCCL call aborts the communicator (ncclCommAbort, which releases peers
// blocked in a collective with us, as Horovod's NCCLContext::ErrorCheck does) and then throws
// tessera::Error naming the call, what we were doing and NCCL's last error. An aborted
// communicator refuses further use (TESSERA_ASSERT).
//
// Thread-safety: none; one thread drives a communicator. Not copyable.
class NcclCommunicator : public Communicator {
 public:
  // Collective over `comm`: rank 0 of `comm` makes the NCCL unique id and broadcasts it over
  // `comm`; every member then joins with its rank in `comm` (so NCCL ranks equal MPI ranks).
  // Precondition: the calling thread's current CUDA device is the one this rank uses
  // (cudaSetDevice(local_rank % device_count) first); two ranks of one communicator on one GPU
  // are refused by NCCL ("Duplicate GPU detected") unless they present different host ids.
  // A local failure (no device, out of memory) on any member makes every member throw.
  NcclCommunicator(MPI_Comm comm, std::string name);
  // Collective over the communicator (NCCL finalizes with its peers), unless it was aborted.
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  // The stream the collectives run on (owned by the communicator).
  backends::cuda::Stream stream() const { return stream_; }
  // The stream whose kernels produce buffers before a verb and consume them after (not owned;
  // nullptr: the legacy default stream).
  void set_compute_stream(backends::cuda::Stream compute_stream) {
    compute_stream_ = compute_stream;
  }
  backends::cuda::Stream compute_stream() const { return compute_stream_; }

  // In place: buf (count, device) becomes the element-wise sum or max over all ranks.
  void all_reduce(float* buf, int64_t count, ReduceOp op) override;
  void all_reduce(double* buf, int64_t count, ReduceOp op) override;
  // In place: buf (count, device) becomes the sum over ranks divided by size() (ncclAvg).
  void all_reduce_avg(float* buf, int64_t count) override;
  // recv (size() * count): rank i's send (count) lands at recv + i * count. send may equal
  // recv + rank() * count (in place).
  void all_gather(float* recv, const float* send, int64_t count) override;
  // send (size() * count): recv (count) on rank i = sum over ranks of send[i * count, +count).
  // recv may equal send + rank() * count (in place).
  void reduce_scatter(float* recv, const float* send, int64_t count) override;
  // The blocked pair of communicator.h (sequence parallelism's per-sequence collectives): one
  // NCCL group of a call per block.
  void all_gather_blocks(float* recv, const float* send, int64_t blocks, int64_t count) override;
  void reduce_scatter_blocks(float* recv, const float* send, int64_t blocks,
                             int64_t count) override;
  // buf (count floats, or bytes) on every rank becomes root's.
  void broadcast(float* buf, int64_t count, int root) override;
  void broadcast_bytes(void* buf, int64_t bytes, int root) override;
  // Returns once every rank has reached it and this rank's earlier collectives are complete
  // (a one-element all-reduce on a scratch buffer).
  void barrier() override;

  // Non-blocking in-place sum of `count` elements of `wire` type at `buf` (device): f32, or bf16
  // (uint16 bf16 values; NCCL adds pairs in float and rounds each partial sum to bf16).
  std::unique_ptr<Request> all_reduce_sum_async(void* buf, int64_t count, WireType wire) override;
  // The sharded pair of communicator.h on device memory (ZeRO-1's buckets): non-blocking in-place
  // reduce-scatter (this rank's piece holds the sum once the request completes; NCCL leaves it
  // in place, so nothing moves), and the blocking in-place all-gather of the pieces.
  std::unique_ptr<Request> reduce_scatter_sum_async(float* buf, int64_t count) override;
  void all_gather_pieces(float* buf, int64_t count) override;

 private:
  friend class NcclRequest;

  // Asserts the communicator was not aborted and its device is current.
  void check_usable() const;
  // Makes stream_ wait for the work enqueued so far on compute_stream_.
  void order_after_compute();
  // Whether `event` has completed; throws (aborting) if NCCL reports an asynchronous error.
  bool poll(CUevent_st* event, const char* doing);
  // Blocks until `event` has completed, polling NCCL's asynchronous error state meanwhile.
  void wait_for(CUevent_st* event, const char* doing);
  // Enqueues on stream_ the reduce-scatter (reduce) or all-gather of the pieces of buf.
  void enqueue_pieces(float* buf, int64_t count, bool reduce);
  // Enqueues the end-of-collective event and waits for it.
  void finish(const char* doing);
  // For the NCCL check: NCCL's error and last-error text; aborts the communicator first.
  std::string abort_and_describe(int nccl_result);
  // Frees the CUDA resources (no throw).
  void release_cuda();

  ncclComm* comm_ = nullptr;
  backends::cuda::Stream stream_ = nullptr;
  backends::cuda::Stream compute_stream_ = nullptr;
  CUevent_st* compute_done_ = nullptr;     // recorded on compute_stream_ before each verb
  CUevent_st* collective_done_ = nullptr;  // recorded on stream_ after each blocking verb
  float* scratch_ = nullptr;               // one device float for barrier()
  int device_ = -1;
  int rank_ = 0;
  int size_ = 1;
  std::string name_;
};

// A device communicator for a run on the CUDA backend: an NcclCommunicator over `comm` whose
// collectives are ordered after `compute_stream` (the backend's stream, Backend::stream()).
// Collective over `comm`. In a build without the CUDA backend it throws tessera::Error naming the
// fix (parallel/nccl_unavailable.cpp), so callers need no #ifdef.
std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm comm, std::string name,
                                                     void* compute_stream);

}  // namespace tessera::parallel
