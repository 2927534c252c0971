// MpiCommunicator: host-memory collectives over a duplicated MPI communicator. MPI counts are
// int, so every verb splits counts above max_elements_per_call_ (INT_MAX) into chunks; each
// collective is recorded to the timeline when one is set.
#include "parallel/communicator.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "core/bf16.h"
#include "core/error.h"
#include "core/timer.h"
#include "parallel/timeline.h"
#include "parallel/watchdog.h"

namespace tessera::parallel {
namespace {

// MPI user reduction: inout[i] = bf16(float(in[i]) + float(inout[i])).
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i)
    b[i] = core::to_bf16(core::from_bf16(a[i]) + core::from_bf16(b[i]));
}

MPI_Op g_bf16_sum_op = MPI_OP_NULL;

// Called by MPI_Finalize when it deletes MPI_COMM_SELF's attributes: frees the op before MPI
// goes away (the standard's hook for cleanup at finalisation).
int free_bf16_op(MPI_Comm, int, void*, void*) {
  if (g_bf16_sum_op != MPI_OP_NULL) MPI_Op_free(&g_bf16_sum_op);
  return MPI_SUCCESS;
}

// The bf16 sum op, created on first use and freed at MPI_Finalize.
MPI_Op bf16_sum_op() {
  if (g_bf16_sum_op == MPI_OP_NULL) {
    TESSERA_MPI_CHECK(MPI_Op_create(&bf16_sum, /*commute=*/1, &g_bf16_sum_op),
                      "creating the bf16 sum reduction");
    int keyval = MPI_KEYVAL_INVALID;
    TESSERA_MPI_CHECK(
        MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, &free_bf16_op, &keyval, nullptr),
        "registering the bf16 op's cleanup at MPI_Finalize");
    TESSERA_MPI_CHECK(MPI_Comm_set_attr(MPI_COMM_SELF, keyval, nullptr),
                      "registering the bf16 op's cleanup at MPI_Finalize");
    // The attribute keeps the key alive until MPI_Finalize deletes it.
    TESSERA_MPI_CHECK(MPI_Comm_free_keyval(&keyval), "freeing the bf16 cleanup key");
  }
  return g_bf16_sum_op;
}

// Chunk size of the staged (packed) paths of all_gather and reduce_scatter: bounds the staging
// buffer to size() * 64 Mi floats.
constexpr int64_t kStageElements = int64_t{1} << 26;

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::kSum ? MPI_SUM : MPI_MAX; }

std::string bytes_args(int64_t bytes) { return "{\"bytes\": " + std::to_string(bytes) + "}"; }

// Records [start, now) of a blocking collective when a timeline is set, and marks it for the
// stalled-rank watchdog (watchdog.h) in any case.
class CollectiveEvent {
 public:
  CollectiveEvent(Timeline* timeline, const std::string& comm_name, const char* verb, int64_t bytes)
      : watch_(verb, comm_name),
        timeline_(timeline),
        bytes_(bytes),
        start_us_(timeline ? core::now_us() : 0.0) {
    if (timeline_) name_ = comm_name + "." + verb;
  }
  ~CollectiveEvent() {
    if (timeline_) {
      timeline_->record(name_, "collective", Lane::kCommunication, start_us_, core::now_us(),
                        bytes_args(bytes_));
    }
  }
  CollectiveEvent(const CollectiveEvent&) = delete;
  CollectiveEvent& operator=(const CollectiveEvent&) = delete;

 private:
  CollectiveScope watch_;
  Timeline* timeline_;
  std::string name_;
  int64_t bytes_;
  double start_us_;
};

// One MPI_Iallreduce per chunk; complete when all are.
class MpiRequest : public Request {
 public:
  MpiRequest(std::vector<MPI_Request> requests, const std::string& comm_name, Timeline* timeline,
             std::string name, std::string args)
      : requests_(std::move(requests)),
        comm_name_(comm_name),
        timeline_(timeline),
        name_(std::move(name)),
        args_(std::move(args)),
        start_us_(core::now_us()) {}
  ~MpiRequest() override {
    // Invariant: the buffer belongs to the caller and must not be written after we return.
    // No throw from a destructor: a failed wait is reported by MPI's return code only.
    if (!done_) {
      CollectiveScope watch(kWaitWhat, comm_name_);
      MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE);
      done_ = true;
      record();
    }
  }
  MpiRequest(const MpiRequest&) = delete;
  MpiRequest& operator=(const MpiRequest&) = delete;

  void wait() override {
    if (done_) return;
    CollectiveScope watch(kWaitWhat, comm_name_);
    TESSERA_MPI_CHECK(
        MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE),
        "waiting for a non-blocking all-reduce");
    done_ = true;
    record();
  }

  bool test() override {
    if (done_) return true;
    int flag = 0;
    TESSERA_MPI_CHECK(MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag,
                                  MPI_STATUSES_IGNORE),
                      "testing a non-blocking all-reduce");
    if (flag) {
      done_ = true;
      record();
    }
    return done_;
  }

 private:
  void record() {
    if (timeline_) {
      timeline_->record(name_, "collective", Lane::kCommunication, start_us_, core::now_us(),
                        args_);
    }
  }

  static constexpr const char* kWaitWhat = "the wait for a non-blocking all_reduce";

  std::vector<MPI_Request> requests_;
  std::string comm_name_;
  Timeline* timeline_;
  std::string name_, args_;
  double start_us_;
  bool done_ = false;
};

// ZeRO-1's reduce-scatter as a ring of point-to-point messages (size - 1 steps), driven by
// wait() and test(). Open MPI's MPI_Ireduce_scatter reduces the whole buffer to one rank and
// scatters it back (2.5x the time of the ring all-reduce on 124M at dp 2, bench_reducer); the
// ring moves (size - 1) / size of the buffer per rank, half a ring all-reduce. At step s rank r
// sends its partial sum of piece (r - 1 - s) mod size to rank r + 1 and adds the partial of
// piece (r - 2 - s) mod size from rank r - 1 into its own, which it sends on at step s + 1;
// after the last step piece r holds the sum over all ranks, in place. Each piece is summed at
// its owner in one fixed order, so the result is the same on every run. Tags carry the call's
// sequence number and the step: requests of several buckets in flight never match each other.
class RingReduceScatter : public Request {
 public:
  RingReduceScatter(MPI_Comm comm, int rank, int size, float* buf, int64_t count, int64_t seq,
                    int tag_ub, const std::string& comm_name, Timeline* timeline)
      : comm_(comm),
        rank_(rank),
        size_(size),
        buf_(buf),
        count_(count),
        tag_base_(static_cast<int>((seq * (size - 1)) % (static_cast<int64_t>(tag_ub) + 1))),
        tag_ub_(tag_ub),
        comm_name_(comm_name),
        timeline_(timeline),
        start_us_(core::now_us()) {
    incoming_.resize(static_cast<size_t>(piece_of(count, size, 0).size()));
    post();
  }
  ~RingReduceScatter() override {
    // Invariant: the buffer belongs to the caller and must not be written after we return.
    try {
      wait();
    } catch (const std::exception&) {
      MPI_Waitall(2, requests_, MPI_STATUSES_IGNORE);
    }
  }
  RingReduceScatter(const RingReduceScatter&) = delete;
  RingReduceScatter& operator=(const RingReduceScatter&) = delete;

  void wait() override {
    if (done_) return;
    CollectiveScope watch("the wait for a non-blocking reduce-scatter", comm_name_);
    while (!advance(/*block=*/true)) {
    }
  }
  bool test() override { return done_ || advance(/*block=*/false); }

 private:
  int mod(int x) const { return ((x % size_) + size_) % size_; }
  Piece piece(int s, int shift) const { return piece_of(count_, size_, mod(rank_ - shift - s)); }
  int tag(int s) const {
    return static_cast<int>((static_cast<int64_t>(tag_base_) + s) %
                            (static_cast<int64_t>(tag_ub_) + 1));
  }

  // Posts step_'s send of piece (r - 1 - s) and receive of piece (r - 2 - s).
  void post() {
    const Piece out = piece(step_, 1), in = piece(step_, 2);
    TESSERA_MPI_CHECK(MPI_Irecv(incoming_.data(), static_cast<int>(in.size()), MPI_FLOAT,
                                mod(rank_ - 1), tag(step_), comm_, &requests_[0]),
                      "receiving a reduce-scatter step");
    TESSERA_MPI_CHECK(MPI_Isend(buf_ + out.begin, static_cast<int>(out.size()), MPI_FLOAT,
                                mod(rank_ + 1), tag(step_), comm_, &requests_[1]),
                      "sending a reduce-scatter step");
  }

  // Completes as many steps as are ready (all of them when `block`); true once done.
  bool advance(bool block) {
    while (!done_) {
      if (block) {
        TESSERA_MPI_CHECK(MPI_Waitall(2, requests_, MPI_STATUSES_IGNORE),
                          "waiting for a reduce-scatter step");
      } else {
        int flag = 0;
        TESSERA_MPI_CHECK(MPI_Testall(2, requests_, &flag, MPI_STATUSES_IGNORE),
                          "testing a reduce-scatter step");
        if (!flag) return false;
      }
      const Piece in = piece(step_, 2);
      float* acc = buf_ + in.begin;
      const float* add = incoming_.data();
      for (int64_t k = 0; k < in.size(); ++k) acc[k] += add[k];
      if (++step_ == size_ - 1) {
        done_ = true;
        if (timeline_) {
          timeline_->record(comm_name_ + ".reduce_scatter_async", "collective",
                            Lane::kCommunication, start_us_, core::now_us(),
                            "{\"bytes\": " + std::to_string(count_ * 4) + "}");
        }
      } else {
        post();
      }
    }
    return true;
  }

  MPI_Comm comm_;
  int rank_, size_;
  float* buf_;
  int64_t count_;
  int tag_base_, tag_ub_;
  std::string comm_name_;
  Timeline* timeline_;
  double start_us_;
  std::vector<float> incoming_;
  MPI_Request requests_[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
  int step_ = 0;
  bool done_ = false;
};

// MPI's per-rank counts and displacements of the pieces of `count` elements.
void piece_counts(int64_t count, int size, std::vector<int>* counts, std::vector<int>* displs) {
  TESSERA_ASSERT(count <= INT_MAX,
                 "splitting a buffer into pieces (at most INT_MAX elements; lower "
                 "parallel.bucket_mb)");
  counts->resize(size);
  displs->resize(size);
  for (int r = 0; r < size; ++r) {
    const Piece p = piece_of(count, size, r);
    (*counts)[r] = static_cast<int>(p.size());
    (*displs)[r] = static_cast<int>(p.begin);
  }
}

}  // namespace

Piece piece_of(int64_t count, int size, int rank) {
  const int64_t per = (count + size - 1) / size;
  return Piece{std::min(count, rank * per), std::min(count, (rank + 1) * per)};
}

std::unique_ptr<Request> Communicator::reduce_scatter_sum_async(float*, int64_t) {
  throw Error("reduce_scatter_sum_async over the " + name() +
              " communicator: not implemented for this backend's collectives (ZeRO-1 runs on "
              "the CPU backend today); set optim.zero: 0");
}

void Communicator::all_gather_pieces(float*, int64_t) {
  throw Error("all_gather_pieces over the " + name() +
              " communicator: not implemented for this backend's collectives (ZeRO-1 runs on "
              "the CPU backend today); set optim.zero: 0");
}

void Communicator::all_gather_blocks(float* recv, const float* send, int64_t blocks,
                                     int64_t count) {
  for (int64_t b = 0; b < blocks; ++b)
    all_gather(recv + b * size() * count, send + b * count, count);
}

void Communicator::reduce_scatter_blocks(float* recv, const float* send, int64_t blocks,
                                         int64_t count) {
  for (int64_t b = 0; b < blocks; ++b) {
    reduce_scatter(recv + b * count, send + b * size() * count, count);
  }
}

void Communicator::all_reduce_avg(float* buf, int64_t count) {
  all_reduce_sum(buf, count);
  const float scale = 1.0f / static_cast<float>(size());
  for (int64_t i = 0; i < count; ++i) buf[i] *= scale;
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name)
    : name_(std::move(name)), max_elements_per_call_(INT_MAX) {
  TESSERA_MPI_CHECK(MPI_Comm_dup(comm, &comm_), "duplicating the communicator");
  // Errors come back as return codes, so TESSERA_MPI_CHECK can say what failed; the app then
  // aborts the job (docs/DESIGN.md decision 13).
  TESSERA_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN),
                    "setting the communicator's error handler");
  TESSERA_MPI_CHECK(MPI_Comm_rank(comm_, &rank_), "reading the rank in the communicator");
  TESSERA_MPI_CHECK(MPI_Comm_size(comm_, &size_), "reading the communicator size");
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

void MpiCommunicator::set_max_elements_per_call(int64_t max_elements) {
  TESSERA_ASSERT(max_elements >= 1 && max_elements <= INT_MAX,
                 "setting the largest element count per MPI call (1 to INT_MAX)");
  max_elements_per_call_ = max_elements;
}

void MpiCommunicator::all_reduce(float* buf, int64_t count, ReduceOp op) {
  CollectiveEvent event(timeline_, name_, "all_reduce", count * 4);
  if (size_ == 1) return;  // in place over one rank: nothing to do (tp = 1 costs nothing)
  for (int64_t off = 0; off < count; off += max_elements_per_call_) {
    const int n = static_cast<int>(std::min(max_elements_per_call_, count - off));
    TESSERA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf + off, n, MPI_FLOAT, mpi_op(op), comm_),
                      "all-reducing floats");
  }
}

void MpiCommunicator::all_reduce(double* buf, int64_t count, ReduceOp op) {
  CollectiveEvent event(timeline_, name_, "all_reduce", count * 8);
  if (size_ == 1) return;  // in place over one rank: nothing to do
  for (int64_t off = 0; off < count; off += max_elements_per_call_) {
    const int n = static_cast<int>(std::min(max_elements_per_call_, count - off));
    TESSERA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf + off, n, MPI_DOUBLE, mpi_op(op), comm_),
                      "all-reducing doubles");
  }
}

void MpiCommunicator::all_gather(float* recv, const float* send, int64_t count) {
  CollectiveEvent event(timeline_, name_, "all_gather", count * size_ * 4);
  const bool in_place = send == recv + static_cast<int64_t>(rank_) * count;
  if (count <= max_elements_per_call_) {
    TESSERA_MPI_CHECK(MPI_Allgather(in_place ? MPI_IN_PLACE : send, static_cast<int>(count),
                                    MPI_FLOAT, recv, static_cast<int>(count), MPI_FLOAT, comm_),
                      "all-gathering floats");
    return;
  }
  // Chunk [off, off + n) of every rank's block: gather rank-major into `staged`, then place each
  // block's piece. Reading send[off, +n) before writing recv keeps the in-place case correct (a
  // rank's own piece is rewritten with the same values).
  const int64_t chunk = std::min(max_elements_per_call_, kStageElements);
  std::vector<float> staged(static_cast<size_t>(chunk) * size_);
  for (int64_t off = 0; off < count; off += chunk) {
    const int64_t n = std::min(chunk, count - off);
    TESSERA_MPI_CHECK(MPI_Allgather(send + off, static_cast<int>(n), MPI_FLOAT, staged.data(),
                                    static_cast<int>(n), MPI_FLOAT, comm_),
                      "all-gathering a chunk of floats");
    for (int i = 0; i < size_; ++i) {
      std::memcpy(recv + i * count + off, staged.data() + i * n, n * sizeof(float));
    }
  }
}

void MpiCommunicator::reduce_scatter(float* recv, const float* send, int64_t count) {
  CollectiveEvent event(timeline_, name_, "reduce_scatter", count * size_ * 4);
  if (count <= max_elements_per_call_) {
    TESSERA_MPI_CHECK(
        MPI_Reduce_scatter_block(send, recv, static_cast<int>(count), MPI_FLOAT, MPI_SUM, comm_),
        "reduce-scattering floats");
    return;
  }
  // Chunk [off, off + n) of every rank's block packed rank-major, then reduce-scattered.
  const int64_t chunk = std::min(max_elements_per_call_, kStageElements);
  std::vector<float> staged(static_cast<size_t>(chunk) * size_);
  for (int64_t off = 0; off < count; off += chunk) {
    const int64_t n = std::min(chunk, count - off);
    for (int i = 0; i < size_; ++i) {
      std::memcpy(staged.data() + i * n, send + i * count + off, n * sizeof(float));
    }
    TESSERA_MPI_CHECK(MPI_Reduce_scatter_block(staged.data(), recv + off, static_cast<int>(n),
                                               MPI_FLOAT, MPI_SUM, comm_),
                      "reduce-scattering a chunk of floats");
  }
}

// One MPI_Allgather: every rank sends its blocks contiguously and receives into a strided
// datatype (blocks pieces of count floats, size() * count apart), resized to count floats so
// that rank i's element starts at recv + i * count.
void MpiCommunicator::all_gather_blocks(float* recv, const float* send, int64_t blocks,
                                        int64_t count) {
  if (blocks * size_ * count > max_elements_per_call_) {
    Communicator::all_gather_blocks(recv, send, blocks, count);  // per block, each chunked
    return;
  }
  CollectiveEvent event(timeline_, name_, "all_gather_blocks", blocks * count * size_ * 4);
  MPI_Datatype strided = MPI_DATATYPE_NULL, placed = MPI_DATATYPE_NULL;
  TESSERA_MPI_CHECK(MPI_Type_vector(static_cast<int>(blocks), static_cast<int>(count),
                                    static_cast<int>(size_ * count), MPI_FLOAT, &strided),
                    "making the blocked all-gather's strided datatype");
  TESSERA_MPI_CHECK(
      MPI_Type_create_resized(strided, 0, static_cast<MPI_Aint>(count * sizeof(float)), &placed),
      "resizing the blocked all-gather's datatype");
  TESSERA_MPI_CHECK(MPI_Type_commit(&placed), "committing the blocked all-gather's datatype");
  const int rc =
      MPI_Allgather(send, static_cast<int>(blocks * count), MPI_FLOAT, recv, 1, placed, comm_);
  MPI_Type_free(&placed);
  MPI_Type_free(&strided);
  TESSERA_MPI_CHECK(rc, "all-gathering blocks of floats");
}

// One MPI_Reduce_scatter_block over the send buffer packed rank-major (rank i's blocks
// together): the reduction's datatype is the receive buffer's too, so a strided one cannot
// leave this rank's blocks contiguous.
void MpiCommunicator::reduce_scatter_blocks(float* recv, const float* send, int64_t blocks,
                                            int64_t count) {
  if (blocks * size_ * count > std::min(max_elements_per_call_, kStageElements)) {
    Communicator::reduce_scatter_blocks(recv, send, blocks, count);  // per block, each chunked
    return;
  }
  CollectiveEvent event(timeline_, name_, "reduce_scatter_blocks", blocks * count * size_ * 4);
  stage_.resize(static_cast<size_t>(blocks * size_ * count));
  for (int i = 0; i < size_; ++i) {
    for (int64_t b = 0; b < blocks; ++b) {
      std::memcpy(stage_.data() + (i * blocks + b) * count, send + (b * size_ + i) * count,
                  count * sizeof(float));
    }
  }
  TESSERA_MPI_CHECK(MPI_Reduce_scatter_block(stage_.data(), recv, static_cast<int>(blocks * count),
                                             MPI_FLOAT, MPI_SUM, comm_),
                    "reduce-scattering blocks of floats");
}

void MpiCommunicator::broadcast(float* buf, int64_t count, int root) {
  CollectiveEvent event(timeline_, name_, "broadcast", count * 4);
  for (int64_t off = 0; off < count; off += max_elements_per_call_) {
    const int n = static_cast<int>(std::min(max_elements_per_call_, count - off));
    TESSERA_MPI_CHECK(MPI_Bcast(buf + off, n, MPI_FLOAT, root, comm_), "broadcasting floats");
  }
}

void MpiCommunicator::broadcast_bytes(void* buf, int64_t bytes, int root) {
  CollectiveEvent event(timeline_, name_, "broadcast", bytes);
  auto* p = static_cast<char*>(buf);
  for (int64_t off = 0; off < bytes; off += max_elements_per_call_) {
    const int n = static_cast<int>(std::min(max_elements_per_call_, bytes - off));
    TESSERA_MPI_CHECK(MPI_Bcast(p + off, n, MPI_BYTE, root, comm_), "broadcasting bytes");
  }
}

void MpiCommunicator::barrier() {
  CollectiveEvent event(timeline_, name_, "barrier", 0);
  TESSERA_MPI_CHECK(MPI_Barrier(comm_), "waiting at a barrier");
}

std::unique_ptr<Request> MpiCommunicator::all_reduce_sum_async(void* buf, int64_t count,
                                                               WireType wire) {
  const bool bf16 = wire == WireType::kBF16;
  const MPI_Datatype type = bf16 ? MPI_UINT16_T : MPI_FLOAT;
  const MPI_Op op = bf16 ? bf16_sum_op() : MPI_SUM;
  const int64_t element_bytes = bf16 ? 2 : 4;
  auto* p = static_cast<char*>(buf);
  std::vector<MPI_Request> requests;
  for (int64_t off = 0; off < count; off += max_elements_per_call_) {
    const int n = static_cast<int>(std::min(max_elements_per_call_, count - off));
    MPI_Request request = MPI_REQUEST_NULL;
    TESSERA_MPI_CHECK(
        MPI_Iallreduce(MPI_IN_PLACE, p + off * element_bytes, n, type, op, comm_, &request),
        "starting a non-blocking all-reduce");
    requests.push_back(request);
  }
  std::string args = "{\"bytes\": " + std::to_string(count * element_bytes) + ", \"wire\": \"" +
                     (bf16 ? "bf16" : "f32") + "\"}";
  return std::make_unique<MpiRequest>(std::move(requests), name_, timeline_,
                                      name_ + ".all_reduce_async", std::move(args));
}

// The reduce-scatter is a ring of point-to-point steps (RingReduceScatter); the all-gather takes
// MPI_Allgather in place when the pieces are equal, which the reducer's buckets nearly always are
// (parameters start on 16-float boundaries), MPI_Allgatherv otherwise.
std::unique_ptr<Request> MpiCommunicator::reduce_scatter_sum_async(float* buf, int64_t count) {
  TESSERA_ASSERT(count >= 0 && count <= INT_MAX,
                 "reduce-scattering a buffer (at most INT_MAX elements; lower parallel.bucket_mb)");
  const int64_t seq = reduce_scatter_calls_++;
  if (size_ == 1 || count == 0) {
    return std::make_unique<MpiRequest>(std::vector<MPI_Request>{}, name_, timeline_,
                                        name_ + ".reduce_scatter_async", bytes_args(count * 4));
  }
  if (tag_ub_ == 0) {
    int* ub = nullptr;
    int found = 0;
    TESSERA_MPI_CHECK(MPI_Comm_get_attr(comm_, MPI_TAG_UB, &ub, &found), "reading MPI_TAG_UB");
    tag_ub_ = found && ub != nullptr ? *ub : 32767;
  }
  return std::make_unique<RingReduceScatter>(comm_, rank_, size_, buf, count, seq, tag_ub_, name_,
                                             timeline_);
}

void MpiCommunicator::all_gather_pieces(float* buf, int64_t count) {
  CollectiveEvent event(timeline_, name_, "all_gather_pieces", count * 4);
  if (size_ == 1) return;
  std::vector<int> counts, displs;
  piece_counts(count, size_, &counts, &displs);
  if (count % size_ == 0) {
    TESSERA_MPI_CHECK(
        MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts[0], MPI_FLOAT, comm_),
        "all-gathering the pieces of a buffer");
    return;
  }
  TESSERA_MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts.data(),
                                   displs.data(), MPI_FLOAT, comm_),
                    "all-gathering the pieces of a buffer");
}

}  // namespace tessera::parallel
