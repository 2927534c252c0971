// A background thread hashing checkpoint shards; see checksum_worker.h.
#include "checkpoint/checksum_worker.h"

#include <omp.h>

#include "checkpoint/checksum.h"

namespace tessera::checkpoint {

ChecksumWorker::ChecksumWorker() : thread_([this, n = omp_get_max_threads()] { run(n); }) {}

ChecksumWorker::~ChecksumWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_.notify_one();
  thread_.join();
}

void ChecksumWorker::submit(const params::ParamSpec& spec, const float* shard, int64_t n,
                            int tp_rank, int tp_size, uint64_t* out) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back({&spec, shard, n, tp_rank, tp_size, out});
  }
  work_.notify_one();
}

void ChecksumWorker::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [this] { return jobs_.empty() && busy_ == 0; });
}

void ChecksumWorker::run(int omp_threads) {
  // A new thread starts from OpenMP's initial settings, not the caller's set_threads.
  omp_set_num_threads(omp_threads);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
    if (jobs_.empty()) return;  // stop_, and nothing left
    const Job job = jobs_.front();
    jobs_.pop_front();
    ++busy_;
    lock.unlock();
    *job.out = shard_checksum(*job.spec, job.shard, job.n, job.tp_rank, job.tp_size);
    lock.lock();
    --busy_;
    if (jobs_.empty() && busy_ == 0) idle_.notify_all();
  }
}

}  // namespace tessera::checkpoint
