// The few-rows kernel: register tiles of R rows x Z panels over panel-packed weights; see
// few_rows_matmul.h for the layout and the fixed per-output order.
#include "backends/cpu/few_rows_matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <utility>

namespace tessera::backends::cpu {
namespace {

constexpr int64_t kLanes = 16;
// Below this many multiply-adds a parallel region costs more than it saves.
constexpr int64_t kMinParallel = 1 << 14;

// acc + w · x with one rounding where the CPU has FMA (the build's -march decides; one build
// always takes the same branch, so the order and the bits are fixed per build).
inline Lanes madd(Lanes w, Lanes x, Lanes acc) {
#if defined(__AVX512F__)
  return reinterpret_cast<Lanes>(_mm512_fmadd_ps(
      reinterpret_cast<__m512>(w), reinterpret_cast<__m512>(x), reinterpret_cast<__m512>(acc)));
#elif defined(__FMA__)
  __m256 w2[2], x2[2], a2[2];
  std::memcpy(w2, &w, sizeof w2);
  std::memcpy(x2, &x, sizeof x2);
  std::memcpy(a2, &acc, sizeof a2);
  for (int h = 0; h < 2; ++h) a2[h] = _mm256_fmadd_ps(w2[h], x2[h], a2[h]);
  Lanes r;
  std::memcpy(&r, a2, sizeof r);
  return r;
#else
  return acc + w * x;
#endif
}

// Weight rows 16g .. 16g+15 of a plain (OC, C) weight as panel g (C vectors), zero-padded.
void pack_panel(Lanes* panel, const float* weight, int64_t g, int64_t C, int64_t OC) {
  std::memset(static_cast<void*>(panel), 0, static_cast<size_t>(C) * sizeof(Lanes));
  float* p = reinterpret_cast<float*>(panel);
  const int64_t rows = std::min(kLanes, OC - g * kLanes);
  for (int64_t l = 0; l < rows; ++l) {
    const float* w = weight + (g * kLanes + l) * C;
    for (int64_t c = 0; c < C; ++c) p[c * kLanes + l] = w[c];
  }
}

// out rows n0 .. n0+R-1, columns of panels g0 .. g0+Z-1 (panels[z] is panel g0+z).
template <int R, int Z>
void tile(float* out, const float* inp, const Lanes* const* panels, const float* bias, int64_t n0,
          int64_t g0, int64_t C, int64_t OC) {
  Lanes acc[R][Z];
  for (int r = 0; r < R; ++r) {
    for (int z = 0; z < Z; ++z) acc[r][z] = Lanes{};
  }
  const float* x = inp + n0 * C;
  for (int64_t c = 0; c < C; ++c) {
    Lanes w[Z];
    for (int z = 0; z < Z; ++z) w[z] = panels[z][c];
    for (int r = 0; r < R; ++r) {
      const Lanes xb = Lanes{} + x[r * C + c];
      for (int z = 0; z < Z; ++z) acc[r][z] = madd(w[z], xb, acc[r][z]);
    }
  }
  for (int z = 0; z < Z; ++z) {
    const int64_t o0 = (g0 + z) * kLanes;
    const int64_t width = std::min(kLanes, OC - o0);
    Lanes b = Lanes{};
    if (bias != nullptr) std::memcpy(&b, bias + o0, static_cast<size_t>(width) * sizeof(float));
    for (int r = 0; r < R; ++r) {
      float t[kLanes];
      const Lanes v = bias != nullptr ? acc[r][z] + b : acc[r][z];
      std::memcpy(t, &v, sizeof t);
      std::memcpy(out + (n0 + r) * OC + o0, t, static_cast<size_t>(width) * sizeof(float));
    }
  }
}

// All N rows against panels g0 .. g0+Z-1: tiles of R rows, then one tile of the rest.
template <int Z, int R>
void all_rows(float* out, const float* inp, const Lanes* const* panels, const float* bias,
              int64_t N, int64_t g0, int64_t C, int64_t OC) {
  int64_t n0 = 0;
  for (; n0 + R <= N; n0 += R) tile<R, Z>(out, inp, panels, bias, n0, g0, C, OC);
  const int64_t rest = N - n0;
  if (rest == 0) return;
  [&]<int... k>(std::integer_sequence<int, k...>) {
    ((rest == k + 1 ? tile<k + 1, Z>(out, inp, panels, bias, n0, g0, C, OC) : void()), ...);
  }
  (std::make_integer_sequence<int, R - 1>{});
}

// Panels per tile by row count: few rows want more columns in flight (at least 8 accumulators
// hide the FMA latency), many rows reuse each loaded panel vector more. At most 24 accumulators.
// Past 6 rows, tiles of 8 rows x 3 panels: a 16-row 124M decode step took a median 38 ms with
// them against 48 ms with 12 x 2 (bench_decode, docs/PERF.md "Serving"), whose 12-row tile
// leaves the compiler too few registers.
constexpr int kMaxZ = 8;
int panels_per_tile(int64_t N) { return N <= 3 ? 8 : (N <= 6 ? 4 : 3); }

void run_tile_columns(float* out, const float* inp, const Lanes* const* panels, const float* bias,
                      int64_t N, int64_t g0, int z, int64_t C, int64_t OC) {
  switch (z) {
    case 8:
      return all_rows<8, 3>(out, inp, panels, bias, N, g0, C, OC);
    case 4:
      return all_rows<4, 6>(out, inp, panels, bias, N, g0, C, OC);
    case 3:
      return all_rows<3, 8>(out, inp, panels, bias, N, g0, C, OC);
    case 2:
      return all_rows<2, 12>(out, inp, panels, bias, N, g0, C, OC);
    default:
      for (int k = 0; k < z; ++k) all_rows<1, 12>(out, inp, panels + k, bias, N, g0 + k, C, OC);
  }
}

// Splits the G panels into tiles of Z (the last one narrower) over the threads; get(g, slot)
// returns panel g, slot in [0, Z) naming a per-tile scratch place for packing.
template <typename GetPanel>
void for_each_tile(int64_t N, int64_t C, int64_t OC, GetPanel get, float* out, const float* inp,
                   const float* bias) {
  const int64_t G = (OC + kLanes - 1) / kLanes;
  const int Z = panels_per_tile(N);
  const int64_t tiles = (G + Z - 1) / Z;
#pragma omp parallel for schedule(static) if (N * C * OC >= kMinParallel)
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t g0 = t * Z;
    const int z = static_cast<int>(std::min<int64_t>(Z, G - g0));
    const Lanes* panels[kMaxZ];
    for (int k = 0; k < z; ++k) panels[k] = get(g0 + k, k);
    run_tile_columns(out, inp, panels, bias, N, g0, z, C, OC);
  }
}

}  // namespace

PackedWeight::PackedWeight(const float* weight, int64_t OC, int64_t C)
    : OC_(OC), C_(C), data_(static_cast<size_t>(panels() * C)) {
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < panels(); ++g) pack_panel(data_.data() + g * C, weight, g, C, OC);
}

void few_rows_forward(float* out, const float* inp, const PackedWeight& weight, const float* bias,
                      int64_t N) {
  for_each_tile(
      N, weight.C(), weight.OC(), [&](int64_t g, int) { return weight.panel(g); }, out, inp, bias);
}

void few_rows_forward(float* out, const float* inp, const float* weight, const float* bias,
                      int64_t N, int64_t C, int64_t OC) {
  for_each_tile(
      N, C, OC,
      [&](int64_t g, int slot) {
        // Slot 0 comes first in each tile, so a resize never moves a panel already handed out.
        thread_local std::vector<Lanes> scratch;
        const size_t need = static_cast<size_t>(kMaxZ * C);
        if (scratch.size() < need) scratch.resize(need);
        Lanes* p = scratch.data() + slot * C;
        pack_panel(p, weight, g, C, OC);
        return static_cast<const Lanes*>(p);
      },
      out, inp, bias);
}

}  // namespace tessera::backends::cpu
