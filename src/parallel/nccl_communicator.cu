// NcclCommunicator (src/parallel/nccl_communicator.h): device-memory collectives through NCCL on
// the communicator's own stream, ordered after the compute stream by an event. Lives here because
// tessera_cuda compiles src/backends/cuda/*.cu; it needs no device code of its own.
#include <cuda_runtime.h>
#include <nccl.h>

#include <exception>
#include <string>
#include <thread>
#include <utility>

#include "backends/cuda/cuda_check.h"
#include "core/error.h"
#include "core/timer.h"
#include "parallel/nccl_communicator.h"
#include "parallel/timeline.h"

// TESSERA_NCCL_CHECK for calls on this communicator: on failure abort_and_describe() reads NCCL's
// last error and aborts the communicator (releasing peers blocked in a collective with us) before
// the generator throws. Use inside NcclCommunicator members only.
#define TESSERA_NCCL_COMM_CHECK(call, doing) \
  TESSERA_CHECK_GEN("NCCL", call, doing, rc_ != ncclSuccess, abort_and_describe(rc_))

namespace tessera::parallel {
namespace {

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::kSum ? ncclSum : ncclMax; }

size_t element_count(int64_t count) {
  TESSERA_ASSERT(count >= 0, "passing a negative element count to an NCCL collective");
  return static_cast<size_t>(count);
}

std::string bytes_args(int64_t bytes) { return "{\"bytes\": " + std::to_string(bytes) + "}"; }

// Records [construction, destruction) of a blocking collective when a timeline is set.
class TimelineSpan {
 public:
  TimelineSpan(Timeline* timeline, const std::string& comm_name, const char* verb, int64_t bytes)
      : timeline_(timeline), bytes_(bytes), start_us_(timeline ? core::now_us() : 0.0) {
    if (timeline_) name_ = comm_name + "." + verb;
  }
  ~TimelineSpan() {
    if (timeline_) {
      timeline_->record(name_, "collective", Lane::kCommunication, start_us_, core::now_us(),
                        bytes_args(bytes_));
    }
  }
  TimelineSpan(const TimelineSpan&) = delete;
  TimelineSpan& operator=(const TimelineSpan&) = delete;

 private:
  Timeline* timeline_;
  std::string name_;
  int64_t bytes_;
  double start_us_;
};

}  // namespace

// One all_reduce_sum_async or reduce_scatter_sum_async: complete when its event, recorded on the
// communicator's stream after the collective, has completed. Owns the event.
class NcclRequest : public Request {
 public:
  NcclRequest(NcclCommunicator* comm, cudaEvent_t done, std::string name, std::string args)
      : comm_(comm),
        event_(done),
        timeline_(comm->timeline()),
        name_(std::move(name)),
        args_(std::move(args)),
        start_us_(core::now_us()) {}
  ~NcclRequest() override {
    // Invariant: the buffer belongs to the caller and must not be written after we return. No
    // throw from a destructor: if waiting fails, the failure has already aborted the
    // communicator, which stops its kernels.
    if (!done_) {
      try {
        wait();
      } catch (const std::exception&) {
      }
    }
    cudaEventDestroy(event_);
  }
  NcclRequest(const NcclRequest&) = delete;
  NcclRequest& operator=(const NcclRequest&) = delete;

  void wait() override {
    if (done_) return;
    comm_->wait_for(event_, "waiting for a non-blocking NCCL collective");
    complete();
  }

  bool test() override {
    if (done_) return true;
    if (comm_->poll(event_, "testing a non-blocking NCCL collective")) complete();
    return done_;
  }

 private:
  void complete() {
    done_ = true;
    if (timeline_) {
      timeline_->record(name_, "collective", Lane::kCommunication, start_us_, core::now_us(),
                        args_);
    }
  }

  NcclCommunicator* comm_;
  cudaEvent_t event_;
  Timeline* timeline_;
  std::string name_, args_;
  double start_us_;
  bool done_ = false;
};

NcclCommunicator::NcclCommunicator(MPI_Comm comm, std::string name) : name_(std::move(name)) {
  TESSERA_MPI_CHECK(MPI_Comm_rank(comm, &rank_), "reading the rank for the NCCL communicator");
  TESSERA_MPI_CHECK(MPI_Comm_size(comm, &size_), "reading the size for the NCCL communicator");
  // Local setup first, its outcome agreed over MPI before NCCL's collective init: a failure on
  // one rank then fails every rank instead of leaving the others waiting in ncclCommInitRank.
  std::string local_error;
  ncclUniqueId id{};
  try {
    TESSERA_CUDA_CHECK(cudaGetDevice(&device_), "reading the CUDA device for NCCL");
    TESSERA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                       "creating the NCCL communicator's stream");
    TESSERA_CUDA_CHECK(cudaEventCreateWithFlags(&compute_done_, cudaEventDisableTiming),
                       "creating the NCCL communicator's events");
    TESSERA_CUDA_CHECK(cudaEventCreateWithFlags(&collective_done_, cudaEventDisableTiming),
                       "creating the NCCL communicator's events");
    TESSERA_CUDA_CHECK(cudaMalloc(&scratch_, sizeof(float)), "allocating the barrier's scratch");
    TESSERA_CUDA_CHECK(cudaMemset(scratch_, 0, sizeof(float)), "clearing the barrier's scratch");
    if (rank_ == 0) TESSERA_NCCL_CHECK(ncclGetUniqueId(&id), "making the NCCL unique id");
  } catch (const Error& e) {
    local_error = e.what();
  }
  try {
    const int local_ok = local_error.empty() ? 1 : 0;
    int all_ok = 0;
    TESSERA_MPI_CHECK(MPI_Allreduce(&local_ok, &all_ok, 1, MPI_INT, MPI_MIN, comm),
                      "agreeing that every rank can join the NCCL communicator");
    if (!local_ok) throw Error(local_error);
    if (!all_ok) {
      throw Error("NCCL communicator '" + name_ + "': another rank failed to set up its CUDA " +
                  "resources or NCCL id (its own message says why), so no rank joins");
    }
    TESSERA_MPI_CHECK(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, comm),
                      "broadcasting the NCCL unique id");
    TESSERA_NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_),
                       "joining the NCCL communicator (collective over its MPI communicator)");
  } catch (...) {
    comm_ = nullptr;
    release_cuda();
    throw;
  }
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ != nullptr) {
    // Drain our stream, watching for a failed peer; no throw from a destructor. A clean drain
    // ends with ncclCommDestroy (which finalizes with the peers); a failure, or destruction while
    // an exception unwinds the stack (peers may never get here), aborts locally instead.
    bool healthy = std::uncaught_exceptions() == 0 &&
                   cudaEventRecord(collective_done_, stream_) == cudaSuccess;
    while (healthy) {
      const cudaError_t query = cudaEventQuery(collective_done_);
      if (query == cudaSuccess) break;
      ncclResult_t async_error = ncclSuccess;
      healthy = query == cudaErrorNotReady &&
                ncclCommGetAsyncError(comm_, &async_error) == ncclSuccess &&
                async_error == ncclSuccess;
      std::this_thread::yield();
    }
    if (healthy) {
      ncclCommDestroy(comm_);
    } else {
      ncclCommAbort(comm_);
    }
    comm_ = nullptr;
  }
  release_cuda();
}

void NcclCommunicator::release_cuda() {
  if (scratch_ != nullptr) cudaFree(scratch_);
  if (collective_done_ != nullptr) cudaEventDestroy(collective_done_);
  if (compute_done_ != nullptr) cudaEventDestroy(compute_done_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  scratch_ = nullptr;
  collective_done_ = compute_done_ = nullptr;
  stream_ = nullptr;
}

std::string NcclCommunicator::abort_and_describe(int nccl_result) {
  std::string message = ncclGetErrorString(static_cast<ncclResult_t>(nccl_result));
  if (comm_ != nullptr) {
    const char* last = ncclGetLastError(comm_);
    if (last != nullptr && *last != '\0') message += "; NCCL's last error: " + std::string(last);
    ncclCommAbort(comm_);
    comm_ = nullptr;
    message += " (communicator '" + name_ + "' aborted)";
  }
  return message;
}

void NcclCommunicator::check_usable() const {
  TESSERA_ASSERT(comm_ != nullptr, "using an NCCL communicator aborted by an earlier error");
  int current = -1;
  TESSERA_CUDA_CHECK(cudaGetDevice(&current), "reading the current CUDA device");
  // Invariant: NCCL's communicator and our stream belong to the device current at construction.
  TESSERA_ASSERT(current == device_,
                 "calling an NCCL collective with another CUDA device current than its own");
}

void NcclCommunicator::order_after_compute() {
  TESSERA_CUDA_CHECK(cudaEventRecord(compute_done_, compute_stream_),
                     "marking the compute stream before a collective");
  TESSERA_CUDA_CHECK(cudaStreamWaitEvent(stream_, compute_done_, 0),
                     "ordering the NCCL stream after the compute stream");
}

bool NcclCommunicator::poll(CUevent_st* event, const char* doing) {
  check_usable();
  const cudaError_t query = cudaEventQuery(event);
  if (query == cudaSuccess) return true;
  if (query != cudaErrorNotReady) TESSERA_CUDA_CHECK(query, doing);
  ncclResult_t async_error = ncclSuccess;
  TESSERA_NCCL_COMM_CHECK(ncclCommGetAsyncError(comm_, &async_error), doing);
  TESSERA_NCCL_COMM_CHECK(async_error, doing);
  return false;
}

void NcclCommunicator::wait_for(CUevent_st* event, const char* doing) {
  while (!poll(event, doing)) std::this_thread::yield();
}

void NcclCommunicator::finish(const char* doing) {
  TESSERA_CUDA_CHECK(cudaEventRecord(collective_done_, stream_), "marking the end of a collective");
  wait_for(collective_done_, doing);
}

void NcclCommunicator::all_reduce(float* buf, int64_t count, ReduceOp op) {
  check_usable();
  if (count == 0) return;  // every rank passes the same count, so every rank skips
  TimelineSpan span(timeline_, name_, "all_reduce", count * 4);
  order_after_compute();
  TESSERA_NCCL_COMM_CHECK(
      ncclAllReduce(buf, buf, element_count(count), ncclFloat32, nccl_op(op), comm_, stream_),
      "all-reducing floats over NCCL");
  finish("waiting for an NCCL all-reduce of floats");
}

void NcclCommunicator::all_reduce(double* buf, int64_t count, ReduceOp op) {
  check_usable();
  if (count == 0) return;
  TimelineSpan span(timeline_, name_, "all_reduce", count * 8);
  order_after_compute();
  TESSERA_NCCL_COMM_CHECK(
      ncclAllReduce(buf, buf, element_count(count), ncclFloat64, nccl_op(op), comm_, stream_),
      "all-reducing doubles over NCCL");
  finish("waiting for an NCCL all-reduce of doubles");
}

void NcclCommunicator::all_reduce_avg(float* buf, int64_t count) {
  check_usable();
  if (count == 0) return;
  TimelineSpan span(timeline_, name_, "all_reduce", count * 4);
  order_after_compute();
  TESSERA_NCCL_COMM_CHECK(
      ncclAllReduce(buf, buf, element_count(count), ncclFloat32, ncclAvg, comm_, stream_),
      "averaging floats over NCCL");
  finish("waiting for an NCCL all-reduce average");
}

void NcclCommunicator::all_gather(float* recv, const float* send, int64_t count) {
  check_usable();
  if (count == 0) return;
  TimelineSpan span(timeline_, name_, "all_gather", count * size_ * 4);
  order_after_compute();
  // NCCL's in-place condition is ours: send == recv + rank * count.
  TESSERA_NCCL_COMM_CHECK(
      ncclAllGather(send, recv, element_count(count), ncclFloat32, comm_, stream_),
      "all-gathering floats over NCCL");
  finish("waiting for an NCCL all-gather");
}

void NcclCommunicator::reduce_scatter(float* recv, const float* send, int64_t count) {
  check_usable();
  if (count == 0) return;
  TimelineSpan span(timeline_, name_, "reduce_scatter", count * size_ * 4);
  order_after_compute();
  TESSERA_NCCL_COMM_CHECK(
      ncclReduceScatter(send, recv, element_count(count), ncclFloat32, ncclSum, comm_, stream_),
      "reduce-scattering floats over NCCL");
  finish("waiting for an NCCL reduce-scatter");
}

void NcclCommunicator::all_gather_blocks(float* recv, const float* send, int64_t blocks,
                                         int64_t count) {
  check_usable();
  if (blocks == 0 || count == 0) return;
  TimelineSpan span(timeline_, name_, "all_gather_blocks", blocks * count * size_ * 4);
  order_after_compute();
  TESSERA_NCCL_COMM_CHECK(ncclGroupStart(), "opening the blocked all-gather's NCCL group");
  for (int64_t b = 0; b < blocks; ++b) {
    TESSERA_NCCL_COMM_CHECK(ncclAllGather(send + b * count, recv + b * size_ * count,
                                          element_count(count), ncclFloat32, comm_, stream_),
                            "all-gathering a block of floats over NCCL");
  }
  TESSERA_NCCL_COMM_CHECK(ncclGroupEnd(), "launching the blocked all-gather's NCCL group");
  finish("waiting for an NCCL blocked all-gather");
}

void NcclCommunicator::reduce_scatter_blocks(float* recv, const float* send, int64_t blocks,
                                             int64_t count) {
  check_usable();
  if (blocks == 0 || count == 0) return;
  TimelineSpan span(timeline_, name_, "reduce_scatter_blocks", blocks * count * size_ * 4);
  order_after_compute();
  TESSERA_NCCL_COMM_CHECK(ncclGroupStart(), "opening the blocked reduce-scatter's NCCL group");
  for (int64_t b = 0; b < blocks; ++b) {
    TESSERA_NCCL_COMM_CHECK(
        ncclReduceScatter(send + b * size_ * count, recv + b * count, element_count(count),
                          ncclFloat32, ncclSum, comm_, stream_),
        "reduce-scattering a block of floats over NCCL");
  }
  TESSERA_NCCL_COMM_CHECK(ncclGroupEnd(), "launching the blocked reduce-scatter's NCCL group");
  finish("waiting for an NCCL blocked reduce-scatter");
}

// A root outside 0..size()-1 is NCCL's ncclInvalidArgument (every rank sees it alike): the
// communicator aborts and the call throws.
void NcclCommunicator::broadcast(float* buf, int64_t count, int root) {
  check_usable();
  if (count == 0) return;
  TimelineSpan span(timeline_, name_, "broadcast", count * 4);
  order_after_compute();
  TESSERA_NCCL_COMM_CHECK(
      ncclBroadcast(buf, buf, element_count(count), ncclFloat32, root, comm_, stream_),
      "broadcasting floats over NCCL");
  finish("waiting for an NCCL broadcast of floats");
}

void NcclCommunicator::broadcast_bytes(void* buf, int64_t bytes, int root) {
  check_usable();
  if (bytes == 0) return;
  TimelineSpan span(timeline_, name_, "broadcast", bytes);
  order_after_compute();
  TESSERA_NCCL_COMM_CHECK(
      ncclBroadcast(buf, buf, element_count(bytes), ncclInt8, root, comm_, stream_),
      "broadcasting bytes over NCCL");
  finish("waiting for an NCCL broadcast of bytes");
}

void NcclCommunicator::barrier() {
  check_usable();
  TimelineSpan span(timeline_, name_, "barrier", 0);
  order_after_compute();
  TESSERA_NCCL_COMM_CHECK(
      ncclAllReduce(scratch_, scratch_, 1, ncclFloat32, ncclSum, comm_, stream_),
      "all-reducing the barrier's scratch over NCCL");
  finish("waiting at an NCCL barrier");
}

std::unique_ptr<Request> NcclCommunicator::all_reduce_sum_async(void* buf, int64_t count,
                                                                WireType wire) {
  check_usable();
  const bool bf16 = wire == WireType::kBF16;
  const int64_t element_bytes = bf16 ? 2 : 4;
  cudaEvent_t done = nullptr;
  TESSERA_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming),
                     "creating a non-blocking all-reduce's event");
  std::string args = "{\"bytes\": " + std::to_string(count * element_bytes) + ", \"wire\": \"" +
                     (bf16 ? "bf16" : "f32") + "\"}";
  // The request owns the event from here, also if a call below throws (an event never recorded
  // counts as complete).
  auto request =
      std::make_unique<NcclRequest>(this, done, name_ + ".all_reduce_async", std::move(args));
  if (count > 0) {
    order_after_compute();
    TESSERA_NCCL_COMM_CHECK(
        ncclAllReduce(buf, buf, element_count(count), bf16 ? ncclBfloat16 : ncclFloat32, ncclSum,
                      comm_, stream_),
        "starting a non-blocking all-reduce over NCCL");
  }
  TESSERA_CUDA_CHECK(cudaEventRecord(done, stream_),
                     "marking the end of a non-blocking all-reduce");
  return request;
}

// The sharded pair (ZeRO-1's buckets, communicator.h): pieces of ceil(count / size) elements.
// When count divides by size every piece is full and NCCL's in-place reduce-scatter / all-gather
// apply directly (recvbuff == sendbuff + rank * per); otherwise the last pieces are short or
// empty, which those verbs cannot express, so one grouped launch reduces (or broadcasts) each
// piece to (from) its owner in place: the same bytes per rank, one launch.
void NcclCommunicator::enqueue_pieces(float* buf, int64_t count, bool reduce) {
  const int64_t per = (count + size_ - 1) / size_;
  if (count % size_ == 0) {
    if (reduce) {
      TESSERA_NCCL_COMM_CHECK(ncclReduceScatter(buf, buf + rank_ * per, element_count(per),
                                                ncclFloat32, ncclSum, comm_, stream_),
                              "starting an in-place reduce-scatter over NCCL");
    } else {
      TESSERA_NCCL_COMM_CHECK(
          ncclAllGather(buf + rank_ * per, buf, element_count(per), ncclFloat32, comm_, stream_),
          "all-gathering the pieces of a buffer over NCCL");
    }
    return;
  }
  TESSERA_NCCL_COMM_CHECK(ncclGroupStart(), "grouping the pieces of a sharded collective");
  for (int r = 0; r < size_; ++r) {
    const Piece p = piece_of(count, size_, r);
    if (p.size() == 0) continue;  // the same on every rank: every rank skips it
    float* piece = buf + p.begin;
    if (reduce) {
      TESSERA_NCCL_COMM_CHECK(ncclReduce(piece, piece, element_count(p.size()), ncclFloat32,
                                         ncclSum, r, comm_, stream_),
                              "reducing a piece to its owner over NCCL");
    } else {
      TESSERA_NCCL_COMM_CHECK(
          ncclBroadcast(piece, piece, element_count(p.size()), ncclFloat32, r, comm_, stream_),
          "broadcasting a piece from its owner over NCCL");
    }
  }
  TESSERA_NCCL_COMM_CHECK(ncclGroupEnd(), "launching the pieces of a sharded collective");
}

std::unique_ptr<Request> NcclCommunicator::reduce_scatter_sum_async(float* buf, int64_t count) {
  check_usable();
  cudaEvent_t done = nullptr;
  TESSERA_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming),
                     "creating a non-blocking reduce-scatter's event");
  auto request = std::make_unique<NcclRequest>(this, done, name_ + ".reduce_scatter_async",
                                               bytes_args(count * 4));
  if (count > 0 && size_ > 1) {
    order_after_compute();
    enqueue_pieces(buf, count, /*reduce=*/true);
  }
  TESSERA_CUDA_CHECK(cudaEventRecord(done, stream_),
                     "marking the end of a non-blocking reduce-scatter");
  return request;
}

void NcclCommunicator::all_gather_pieces(float* buf, int64_t count) {
  check_usable();
  if (count == 0 || size_ == 1) return;
  TimelineSpan span(timeline_, name_, "all_gather_pieces", count * 4);
  order_after_compute();
  enqueue_pieces(buf, count, /*reduce=*/false);
  finish("waiting for an NCCL all-gather of pieces");
}

std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm comm, std::string name,
                                                     void* compute_stream) {
  auto nccl = std::make_unique<NcclCommunicator>(comm, std::move(name));
  nccl->set_compute_stream(static_cast<backends::cuda::Stream>(compute_stream));
  return nccl;
}

}  // namespace tessera::parallel
