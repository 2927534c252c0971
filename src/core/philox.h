// Philox-4x32-10 counter-based RNG (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC'11). Every random number in Tessera is a pure function of
// (seed, stream id, global element index), so a shard draws exactly its slice of the full tensor
// and results do not depend on the grid shape.
#pragma once

#include <array>
#include <cstdint>

namespace tessera::core {

using PhiloxCounter = std::array<uint32_t, 4>;
using PhiloxKey = std::array<uint32_t, 2>;

// The raw bijection: 10 rounds of Philox-4x32 on `counter` under `key`.
PhiloxCounter philox4x32_10(PhiloxCounter counter, PhiloxKey key);

// Stream ids: one per purpose, so adding a consumer never shifts another's numbers.
enum class RngStream : uint32_t {
  kInit = 1,       // parameter initialisation; parameter p uses kInit + (p << 8)
  kDataOrder = 2,  // per-epoch permutation of sequences
  kDropout = 3,
  kSampling = 4,  // generation
};

// Four 32-bit words for (seed, stream, index): key = seed, counter = (index lo, index hi, stream,
// 0).
PhiloxCounter philox_draw(uint64_t seed, uint64_t stream, uint64_t index);

// Uniform in (0, 1) from the first word of the draw (24-bit mantissa, never exactly 0 or 1).
float uniform01(uint64_t seed, uint64_t stream, uint64_t index);
// Standard normal by Box-Muller from the first two words.
float standard_normal(uint64_t seed, uint64_t stream, uint64_t index);

}  // namespace tessera::core
