// Decode-row attention over a KV cache; see attention_decode.h. The per-row arithmetic is fixed
// (a fixed order over positions and head dims), so a row gives the same bits in any batch.
#include "backends/cpu/attention_decode.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace tessera::backends::cpu {

namespace {
// The cache row of position p of slot `slot`.
inline int64_t cache_row(const KvPages& pages, int64_t slot, int64_t p) {
  const int64_t block = pages.block_table[slot * pages.blocks_per_slot + p / pages.block_size];
  return block * pages.block_size + p % pages.block_size;
}
}  // namespace

void kv_append(float* k_cache, float* v_cache, const float* qkv, const KvPages& pages,
               const int32_t* slots, const int32_t* positions, int64_t N, int64_t C) {
  for (int64_t i = 0; i < N; ++i) {
    const int64_t row = cache_row(pages, slots[i], positions[i]);
    std::memcpy(k_cache + row * C, qkv + i * 3 * C + C, C * sizeof(float));
    std::memcpy(v_cache + row * C, qkv + i * 3 * C + 2 * C, C * sizeof(float));
  }
}

namespace {

// q · k over HS dims in a fixed order that vectorises: kLanes partial sums over the dims in
// strides of kLanes, summed by a fixed tree, then the tail. (A plain running sum is one chain of
// HS dependent adds, which the compiler may not reorder.) The same order for every row and step.
constexpr int64_t kLanes = 16;
inline float dot_fixed(const float* a, const float* b, int64_t n) {
  float part[kLanes] = {};
  const int64_t body = n / kLanes * kLanes;
  for (int64_t d = 0; d < body; d += kLanes) {
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) part[l] += a[d + l] * b[d + l];
  }
  for (int64_t w = kLanes / 2; w >= 1; w /= 2) {
    for (int64_t l = 0; l < w; ++l) part[l] += part[l + w];
  }
  float dot = part[0];
  for (int64_t d = body; d < n; ++d) dot += a[d] * b[d];
  return dot;
}

// One head of one row: out_h = softmax(q_h K^T * scale) V over n_ctx positions, held in blocks
// of block_size positions at k_blocks[b] + t * C (the head's columns), b in table order.
void attend_head(float* oh, float* scratch, const float* qh, const float* k_base,
                 const float* v_base, const int32_t* table, int64_t block_size, int64_t n_ctx,
                 int64_t C, int64_t HS, float scale) {
  const int64_t block_stride = block_size * C;
  float max = -INFINITY;
  for (int64_t t0 = 0, b = 0; t0 < n_ctx; t0 += block_size, ++b) {
    const float* kb = k_base + table[b] * block_stride;
    const int64_t len = std::min(block_size, n_ctx - t0);
    for (int64_t t = 0; t < len; ++t) {
      scratch[t0 + t] = dot_fixed(qh, kb + t * C, HS) * scale;
      max = std::fmax(max, scratch[t0 + t]);
    }
  }
  float sum = 0;
  for (int64_t t = 0; t < n_ctx; ++t) {
    scratch[t] = std::exp(scratch[t] - max);
    sum += scratch[t];
  }
  for (int64_t d = 0; d < HS; ++d) oh[d] = 0;
  for (int64_t t0 = 0, b = 0; t0 < n_ctx; t0 += block_size, ++b) {
    const float* vb = v_base + table[b] * block_stride;
    const int64_t len = std::min(block_size, n_ctx - t0);
    for (int64_t t = 0; t < len; ++t) {
      const float p = scratch[t0 + t] / sum;
      const float* v = vb + t * C;
      for (int64_t d = 0; d < HS; ++d) oh[d] += p * v[d];
    }
  }
}

}  // namespace

void attention_decode(float* out, const float* qkv, const float* k_cache, const float* v_cache,
                      const KvPages& pages, const int32_t* slots, const int32_t* positions,
                      int64_t N, int64_t C, int64_t NH) {
  if (N == 0) return;
  const int64_t HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const int64_t work = N * NH;
  const int64_t max_positions = pages.max_positions();
  // Parallel over (row, head) pairs; each pair's arithmetic is the same in any schedule.
#pragma omp parallel if (work > 1 && N * C * (positions[N - 1] + 1) > (1 << 15))
  {
    thread_local std::vector<float> scratch;
    if (static_cast<int64_t>(scratch.size()) < max_positions) scratch.resize(max_positions);
#pragma omp for schedule(static)
    for (int64_t w = 0; w < work; ++w) {
      const int64_t i = w / NH, h = w % NH;
      const int32_t* table =
          pages.block_table + static_cast<int64_t>(slots[i]) * pages.blocks_per_slot;
      attend_head(out + i * C + h * HS, scratch.data(), qkv + i * 3 * C + h * HS, k_cache + h * HS,
                  v_cache + h * HS, table, pages.block_size, positions[i] + 1, C, HS, scale);
    }
  }
}

}  // namespace tessera::backends::cpu
