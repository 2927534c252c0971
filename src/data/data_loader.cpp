// DataLoader: per-epoch Philox permutation of fixed-stride sequences over memory-mapped shards.
#include "data/data_loader.h"

#include <algorithm>
#include <utility>

#include "core/error.h"
#include "core/philox.h"

namespace tessera::data {
namespace {

std::vector<std::string> split_paths(const std::string& paths) {
  std::vector<std::string> out;
  size_t begin = 0;
  while (begin <= paths.size()) {
    size_t end = paths.find(',', begin);
    if (end == std::string::npos) end = paths.size();
    std::string p = paths.substr(begin, end - begin);
    const size_t first = p.find_first_not_of(" \t");
    const size_t last = p.find_last_not_of(" \t");
    out.push_back(first == std::string::npos ? "" : p.substr(first, last - first + 1));
    begin = end + 1;
  }
  return out;
}

}  // namespace

core::Result<DataLoader> DataLoader::open(const std::string& paths, int64_t T, uint64_t seed) {
  if (T <= 0) {
    return core::Status::error("data '" + paths + "': sequence length T = " + std::to_string(T) +
                               " must be positive; set the model's sequence length");
  }
  DataLoader loader;
  loader.paths_ = paths;
  loader.T_ = T;
  loader.seed_ = seed;
  loader.row_.resize(static_cast<size_t>(T + 1));
  for (const std::string& path : split_paths(paths)) {
    if (path.empty()) {
      return core::Status::error("data paths '" + paths +
                                 "' contain an empty entry; separate shard files by single commas");
    }
    core::Result<TokenShard> shard = TokenShard::open(path);
    if (!shard) return shard.status();
    const int64_t n = shard->size();
    loader.first_sequence_.push_back(loader.num_sequences_);
    loader.num_sequences_ += n > T ? (n - 1) / T : 0;
    loader.num_tokens_ += n;
    loader.shards_.push_back(std::move(shard).value());
  }
  if (loader.num_sequences_ == 0) {
    return core::Status::error("data '" + paths + "': " + std::to_string(loader.num_tokens_) +
                               " tokens hold no sequence of T + 1 = " + std::to_string(T + 1) +
                               " tokens; use more data or a shorter sequence length");
  }
  return loader;
}

core::Status DataLoader::validate_batch(int64_t global_batch) const {
  if (global_batch <= 0) {
    return core::Status::error("data '" + paths_ + "': global batch " +
                               std::to_string(global_batch) + " must be positive");
  }
  if (global_batch > num_sequences_) {
    return core::Status::error(
        "data '" + paths_ + "': " + std::to_string(num_tokens_) + " tokens hold " +
        std::to_string(num_sequences_) + " sequences of T + 1 = " + std::to_string(T_ + 1) +
        " tokens, fewer than the global batch of " + std::to_string(global_batch) +
        "; use more data, a smaller batch or a shorter sequence length");
  }
  return core::Status::ok();
}

void DataLoader::ensure_order(int64_t epoch) {
  TESSERA_ASSERT(epoch >= 0, "data loader: epoch must be non-negative");
  if (epoch == order_epoch_) return;
  // Sort sequences by a 64-bit Philox draw keyed by (seed, stream, epoch, sequence); ties (a
  // 2^-64 event) go to the lower index. The stream's high word carries the epoch.
  const uint64_t stream =
      static_cast<uint64_t>(core::RngStream::kDataOrder) | (static_cast<uint64_t>(epoch) << 32);
  std::vector<std::pair<uint64_t, int64_t>> keyed(num_sequences_);
  for (int64_t s = 0; s < num_sequences_; ++s) {
    core::PhiloxCounter r = core::philox_draw(seed_, stream, static_cast<uint64_t>(s));
    keyed[s] = {(static_cast<uint64_t>(r[1]) << 32) | r[0], s};
  }
  std::sort(keyed.begin(), keyed.end());
  order_.resize(num_sequences_);
  for (int64_t i = 0; i < num_sequences_; ++i) order_[i] = keyed[i].second;
  order_epoch_ = epoch;
}

int64_t DataLoader::sequence_at(int64_t epoch, int64_t position) {
  TESSERA_ASSERT(position >= 0 && position < num_sequences_, "data loader: position out of range");
  ensure_order(epoch);
  return order_[position];
}

void DataLoader::next_batch(int64_t global_batch, int64_t first, int64_t count, int32_t* inputs,
                            int32_t* targets) {
  core::Status valid = validate_batch(global_batch);
  if (!valid) throw Error(valid.message());
  TESSERA_ASSERT(first >= 0 && count >= 0 && first + count <= global_batch,
                 "data loader: slice [first, first + count) must lie inside the global batch");
  TESSERA_ASSERT(cursor_.epoch >= 0 && cursor_.position >= 0,
                 "data loader: cursor (epoch, position) must be non-negative");
  if (cursor_.position + global_batch > num_sequences_) {  // tail too short: next epoch
    cursor_.epoch += 1;
    cursor_.position = 0;
  }
  ensure_order(cursor_.epoch);
  std::vector<int32_t>& row = row_;
  for (int64_t j = 0; j < count; ++j) {
    const int64_t s = order_[cursor_.position + first + j];
    // The shard holding s: the last one whose first sequence is <= s.
    const auto k =
        static_cast<size_t>(std::upper_bound(first_sequence_.begin(), first_sequence_.end(), s) -
                            first_sequence_.begin() - 1);
    shards_[k].copy((s - first_sequence_[k]) * T_, T_ + 1, row.data());
    std::copy(row.begin(), row.begin() + T_, inputs + j * T_);
    std::copy(row.begin() + 1, row.end(), targets + j * T_);
  }
  cursor_.position += global_batch;
}

}  // namespace tessera::data
