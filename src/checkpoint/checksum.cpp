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

uint64_t shard_checksum(const params::ParamSpec& spec, const float* shard, int64_t n, int tp_rank,
                        int tp_size) {
  if (spec.replicated() || tp_size == 1) return tensor_checksum(shard, n);
  // The shard is rows (outer, k) of `inner` contiguous elements each, around the split dim; row
  // k of part p on this rank is global row p * block_global + tp_rank * block_local + k', so a
  // row's global indices are one contiguous run (ParamSpec::global_index, row by row).
  const core::Shape local = spec.local_shape(tp_size);
  int64_t inner = 1;
  for (size_t d = spec.split_dim + 1; d < local.size(); ++d) inner *= local[d];
  const int64_t local_len = local[spec.split_dim];
  const int64_t global_len = spec.global_shape[spec.split_dim];
  const int64_t block_local = local_len / spec.split_parts;
  const int64_t block_global = block_local * tp_size;
  const int64_t rows = n / inner;  // outer * local_len
  uint64_t sum = 0;
#pragma omp parallel for schedule(static) reduction(+ : sum)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t outer = r / local_len, k = r % local_len;
    const int64_t g = (k / block_local) * block_global + tp_rank * block_local + k % block_local;
    const auto base = static_cast<uint64_t>((outer * global_len + g) * inner);
    const float* row = shard + r * inner;
    for (int64_t i = 0; i < inner; ++i) {
      sum += checksum_term(base + static_cast<uint64_t>(i), float_bits(row[i]));
    }
  }
  return sum;
}

}  // namespace tessera::checkpoint
