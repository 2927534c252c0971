// Layout-independent dataset checksums; see checksum.h.
#include "checkpoint/checksum.h"

#include <cstring>

namespace tessera::checkpoint {

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

namespace {
inline uint32_t float_bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}
}  // namespace

uint64_t tensor_checksum(const float* data, int64_t n) {
  uint64_t sum = 0;  // unsigned: wraps mod 2^64, so the order of summation does not matter
#pragma omp parallel for schedule(static) reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j)
    sum += checksum_term(static_cast<uint64_t>(j), float_bits(data[j]));
  return sum;
}

uint64_t shard_checksum(const models::ParamSpec& spec, const float* shard, int64_t n, int tp_rank,
                        int tp_size) {
  if (spec.replicated() || tp_size == 1) return tensor_checksum(shard, n);
  uint64_t sum = 0;
#pragma omp parallel for schedule(static) reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    const int64_t g = spec.global_index(j, tp_rank, tp_size);
    sum += checksum_term(static_cast<uint64_t>(g), float_bits(shard[j]));
  }
  return sum;
}

}  // namespace tessera::checkpoint
