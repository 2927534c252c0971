// KvCache: the block pool, the block table and copy-on-write; see kv_cache.h.
#include "models/kv_cache.h"

#include "backends/backend.h"
#include "core/error.h"
#include "models/gpt.h"

namespace tessera::models {

KvCache::KvCache(const Gpt& model, int64_t n_slots, int64_t n_blocks, int64_t block_size)
    : backend_(model.backend()),
      n_slots_(n_slots),
      maxT_(model.config().max_seq_len),
      block_size_(block_size) {
  TESSERA_ASSERT(n_slots >= 1 && block_size >= 1 && n_blocks >= 0,
                 "sizing a KV cache for at least one sequence, in blocks of at least one position");
  blocks_per_slot_ = (maxT_ + block_size - 1) / block_size;
  n_blocks_ = n_blocks > 0 ? n_blocks : n_slots * blocks_per_slot_;
  TESSERA_ASSERT(n_blocks_ < (int64_t{1} << 31), "a KV cache of fewer than 2^31 blocks");
  const int64_t C_local = model.config().n_embd / model.tp_size();
  const int64_t L = model.config().n_layer;
  layer_stride_ = n_blocks_ * block_size * C_local;
  n_layer_ = L;
  C_local_ = C_local;
  k_ = backend_.zeros({L, n_blocks_, block_size, C_local});
  v_ = backend_.zeros({L, n_blocks_, block_size, C_local});
  table_.assign(n_slots * blocks_per_slot_, 0);
  held_.assign(n_slots, 0);
  refs_.assign(n_blocks_, 0);
  free_.reserve(n_blocks_);
  // A stack whose top is block 0: a fresh cache fills the pool from its start.
  for (int64_t b = n_blocks_ - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
  device_table_ = backend_.zeros({n_slots * blocks_per_slot_}, core::DType::kI32);
}

backends::KvPages KvCache::pages() {
  if (table_dirty_) {
    backend_.copy_to_device(device_table_.raw(), table_.data(), table_.size() * sizeof(int32_t));
    table_dirty_ = false;
  }
  return backends::KvPages{device_table_.data<int32_t>(), blocks_per_slot_, block_size_};
}

int32_t KvCache::take_block() {
  TESSERA_ASSERT(!free_.empty(), "taking a KV-cache block from a pool with one free");
  const int32_t block = free_.back();
  free_.pop_back();
  refs_[block] = 1;
  return block;
}

void KvCache::drop_block(int32_t block) {
  TESSERA_ASSERT(refs_[block] > 0, "letting go of a KV-cache block some slot holds");
  if (--refs_[block] == 0) free_.push_back(block);
}

int64_t KvCache::blocks_needed(int64_t slot, int64_t begin, int64_t end) const {
  TESSERA_ASSERT(slot >= 0 && slot < n_slots_ && begin >= 0 && begin <= end && end <= maxT_,
                 "asking for KV-cache positions of a slot inside the context");
  if (begin == end) return 0;
  const int64_t first = begin / block_size_, last = blocks_for(end);  // blocks [first, last)
  const int32_t* row = table_.data() + slot * blocks_per_slot_;
  int64_t n = 0;
  for (int64_t b = first; b < last; ++b) {
    if (b >= held_[slot] || refs_[row[b]] > 1) ++n;
  }
  return n;
}

void KvCache::make_writable(int64_t slot, int64_t begin, int64_t end) {
  TESSERA_ASSERT(blocks_needed(slot, begin, end) <= free_blocks(),
                 "making KV-cache positions writable with enough free blocks");
  if (begin == end) return;
  TESSERA_ASSERT(begin <= held_[slot] * block_size_,
                 "writing KV-cache positions that follow the slot's held ones (no gap)");
  const int64_t first = begin / block_size_, last = blocks_for(end);
  int32_t* row = table_.data() + slot * blocks_per_slot_;
  const size_t block_bytes = static_cast<size_t>(block_size_ * C_local_) * sizeof(float);
  for (int64_t b = first; b < last; ++b) {
    if (b >= held_[slot]) {
      row[b] = take_block();
      held_[slot] = b + 1;
      table_dirty_ = true;
    } else if (refs_[row[b]] > 1) {
      const int32_t shared = row[b], own = take_block();
      for (int64_t layer = 0; layer < n_layer_; ++layer) {
        const int64_t from = shared * block_size_ * C_local_, to = own * block_size_ * C_local_;
        backend_.copy(k(layer) + to, k(layer) + from, block_bytes);
        backend_.copy(v(layer) + to, v(layer) + from, block_bytes);
      }
      drop_block(shared);
      row[b] = own;
      table_dirty_ = true;
    }
  }
}

void KvCache::truncate(int64_t slot, int64_t positions) {
  TESSERA_ASSERT(slot >= 0 && slot < n_slots_ && positions >= 0,
                 "truncating a slot of the KV cache");
  const int64_t keep = blocks_for(positions);
  const int32_t* row = table_.data() + slot * blocks_per_slot_;
  for (int64_t b = keep; b < held_[slot]; ++b) drop_block(row[b]);
  if (keep < held_[slot]) held_[slot] = keep;
}

void KvCache::share(int64_t from, int64_t to, int64_t positions) {
  TESSERA_ASSERT(from >= 0 && from < n_slots_ && to >= 0 && to < n_slots_ && from != to &&
                     held_[to] == 0 && positions >= 0 && blocks_for(positions) <= held_[from],
                 "sharing a slot's held KV-cache positions with a slot that holds none");
  const int64_t n = blocks_for(positions);
  const int32_t* src = table_.data() + from * blocks_per_slot_;
  int32_t* dst = table_.data() + to * blocks_per_slot_;
  for (int64_t b = 0; b < n; ++b) {
    dst[b] = src[b];
    ++refs_[src[b]];
  }
  held_[to] = n;
  if (n > 0) table_dirty_ = true;
}

}  // namespace tessera::models
