// Shard checksums computed on one background thread, so that hashing dataset k overlaps the
// HDF5 transfer of dataset k + 1 (a checkpoint read or write is otherwise I/O, then hashing, in
// turn). Only the worker touches the queued shards' checksums; the caller does all HDF5 and MPI.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>

#include "params/param_spec.h"

namespace tessera::checkpoint {

class ChecksumWorker {
 public:
  // Starts the thread; its OpenMP loops use as many threads as the caller's do now.
  ChecksumWorker();
  // Finishes the queued work, then joins the thread.
  ~ChecksumWorker();
  ChecksumWorker(const ChecksumWorker&) = delete;
  ChecksumWorker& operator=(const ChecksumWorker&) = delete;

  // Queues shard_checksum(spec, shard, n, tp_rank, tp_size) into *out. `spec`, `shard` and `out`
  // must stay valid, and `shard` unchanged, until wait() returns.
  void submit(const params::ParamSpec& spec, const float* shard, int64_t n, int tp_rank,
              int tp_size, uint64_t* out);
  // Returns once every queued checksum is in its *out.
  void wait();

 private:
  struct Job {
    const params::ParamSpec* spec;
    const float* shard;
    int64_t n;
    int tp_rank, tp_size;
    uint64_t* out;
  };
  void run(int omp_threads);

  std::mutex mu_;
  std::condition_variable work_, idle_;
  std::deque<Job> jobs_;
  int busy_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace tessera::checkpoint
