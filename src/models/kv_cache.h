// KvCache: keys and values of this rank's heads for the sequences of a decode batch, paged (as
// vLLM's PagedAttention, Kwon et al. 2023): per layer, k and v are a pool of n_blocks blocks of
// block_size positions, (L, n_blocks, block_size, C_local), and a block table gives each of
// n_slots slots the blocks that hold its positions 0, 1, ... in order (backends/kv_pages.h). A
// slot holds only the blocks its positions reach, so the memory follows the tokens cached, not
// n_slots x the context. Two slots may hold the same block (a shared prefix: the same tokens at
// the same positions give the same keys and values); a shared block is copied before either
// writes into it (copy-on-write, make_writable), so sharing never changes what a slot reads.
//
// Which slots are in use, and which free slots' blocks to give back when the pool runs short, is
// the caller's bookkeeping (generate/generator.h): the cache is storage and block accounting on
// the backend's device. Allocates once.
#pragma once

#include <cstdint>
#include <vector>

#include "backends/kv_pages.h"
#include "core/tensor.h"

namespace tessera::backends {
class Backend;
}

namespace tessera::models {

class Gpt;

class KvCache {
 public:
  static constexpr int64_t kDefaultBlockSize = 16;  // positions a block (vLLM's default too)

  // Sized for `model` (its layers, context and this rank's heads): n_slots block-table rows of
  // ceil(context / block_size) blocks, and a pool of n_blocks blocks; n_blocks = 0 gives every
  // slot its whole context (n_slots x blocks_per_slot()), which can never run short.
  KvCache(const Gpt& model, int64_t n_slots, int64_t n_blocks = 0,
          int64_t block_size = kDefaultBlockSize);
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  float* k(int64_t layer) const { return k_.f32() + layer * layer_stride_; }
  float* v(int64_t layer) const { return v_.f32() + layer * layer_stride_; }
  // The block table for the kernels, on the device (uploaded here when it changed).
  backends::KvPages pages();

  int64_t n_slots() const { return n_slots_; }
  int64_t max_seq() const { return maxT_; }
  int64_t block_size() const { return block_size_; }
  int64_t blocks_per_slot() const { return blocks_per_slot_; }
  int64_t n_blocks() const { return n_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  // Blocks `slot` names in its table: its positions [0, held_blocks(slot) x block_size) have a
  // home (written or not).
  int64_t held_blocks(int64_t slot) const { return held_[slot]; }
  // Blocks whose positions `n` positions fill (ceil(n / block_size)).
  int64_t blocks_for(int64_t positions) const {
    return (positions + block_size_ - 1) / block_size_;
  }
  int64_t bytes() const { return static_cast<int64_t>(k_.bytes() + v_.bytes()); }

  // Blocks make_writable(slot, begin, end) takes from the pool: one per block past the slot's
  // held ones, and one per held block of the range that another slot also holds.
  int64_t blocks_needed(int64_t slot, int64_t begin, int64_t end) const;
  // Makes positions [begin, end) of `slot` writable by kv_append: appends fresh blocks to the
  // slot's table up to `end`, and replaces each held block of the range that another slot also
  // holds by a private copy of it (its positions before `begin` are the ones the slot reads).
  // Needs begin <= held_blocks(slot) x block_size (no gap) and blocks_needed() <= free_blocks().
  void make_writable(int64_t slot, int64_t begin, int64_t end);
  // Keeps the blocks of the slot's first `positions` positions and lets go of the rest (all of
  // them at 0); a block no slot holds any more returns to the pool.
  void truncate(int64_t slot, int64_t positions);
  // Slot `to`, which holds no block, takes the blocks of positions [0, positions) of slot `from`
  // (which holds them) by reference: no copy now, copy-on-write later.
  void share(int64_t from, int64_t to, int64_t positions);

 private:
  int32_t take_block();
  void drop_block(int32_t block);

  backends::Backend& backend_;
  int64_t n_slots_, maxT_, block_size_, blocks_per_slot_, n_blocks_;
  int64_t layer_stride_, n_layer_, C_local_;
  core::Tensor k_, v_;
  std::vector<int32_t> table_;  // host copy: (n_slots, blocks_per_slot)
  std::vector<int64_t> held_;   // per slot: table entries in use (from the start)
  std::vector<int32_t> refs_;   // per block: the slots that hold it
  std::vector<int32_t> free_;   // blocks no slot holds (a stack)
  core::Tensor device_table_;   // table_ on the device, when table_dirty_ is false
  bool table_dirty_ = true;
};

}  // namespace tessera::models
