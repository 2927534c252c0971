// KvPages: where a paged KV cache keeps each sequence's positions (the block table of vLLM's
// PagedAttention, Kwon et al. 2023). The cache's k and v are each (n_blocks, block_size, C): a
// pool of fixed-size blocks of positions. Position p of the sequence in slot s is cache row
//   block_table[s * blocks_per_slot + p / block_size] * block_size + p % block_size,
// so a sequence holds only the blocks its positions reach, and two sequences may name the same
// block (a shared prefix). A contiguous cache (n_slots, maxT, C) is the case block_size = maxT,
// blocks_per_slot = 1, block_table[s] = s. The kernels of both backends take it.
#pragma once

#include <cstdint>

namespace tessera::backends {

struct KvPages {
  const int32_t* block_table = nullptr;  // (n_slots, blocks_per_slot) int32 on the device
  int64_t blocks_per_slot = 0;
  int64_t block_size = 0;
  // The most positions a slot can address.
  int64_t max_positions() const { return blocks_per_slot * block_size; }
};

}  // namespace tessera::backends
