// Layout-independent dataset checksums (docs/CHECKPOINT-FORMAT.md): a dataset's checksum is the
// sum, mod 2^64, of one 64-bit term per element, term = mix64(mix64(global flat index) ^ bits),
// so any split of the dataset over ranks sums to the same value whatever grid wrote or reads it.
#pragma once

#include <cstdint>

#include "params/param_spec.h"

namespace tessera::checkpoint {

// The text of the `checksum_algorithm` attribute (informative).
constexpr const char* kChecksumAlgorithm = "sum mod 2^64 of mix64(mix64(global index) ^ f32 bits)";

// SplitMix64's output function (Steele, Lea & Flood, "Fast splittable pseudorandom number
// generators", OOPSLA 2014): a bijection on 64-bit words with full avalanche.
uint64_t mix64(uint64_t z);

// The term of one element: `global_index` is its row-major index in the dataset's global shape,
// `bits` its float32 bit pattern. For a fixed index the term is a bijection of `bits`, so
// changing any one element always changes the checksum.
inline uint64_t checksum_term(uint64_t global_index, uint32_t bits) {
  return mix64(mix64(global_index) ^ static_cast<uint64_t>(bits));
}

// Sum of the terms of a whole tensor of n elements (global index = position). Threaded.
uint64_t tensor_checksum(const float* data, int64_t n);

// This tp rank's part of `spec`'s checksum: element j of `shard` (n = its local element count)
// has global index spec.global_index(j, tp_rank, tp_size). Summed over the tp ranks of one
// replica (a replicated parameter: taken once), the parts give tensor_checksum of the whole.
uint64_t shard_checksum(const params::ParamSpec& spec, const float* shard, int64_t n, int tp_rank,
                        int tp_size);

}  // namespace tessera::checkpoint
