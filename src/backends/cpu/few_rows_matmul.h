// The few-rows matmul of decode steps: out (N, OC) = inp (N, C) · weight (OC, C)ᵀ + bias for
// N of 1 to about 32 rows, where OpenBLAS's GEMM would copy (pack) the whole weight matrix on
// every call for a handful of rows.
//
// The weight is read in panels: panel g holds weight rows 16g .. 16g+15 transposed, (C, 16),
// zero-padded past OC, so one 16-lane vector load gives 16 output columns at one c. A register
// tile of R rows x Z panels (R x Z accumulators, at most 24) multiplies each loaded panel vector
// with R broadcast inputs. Every output (n, o) is computed in one fixed order whatever N is and
// whichever tile holds it: acc = 0, then acc = fma(weight[o, c], inp[n, c], acc) for c = 0 ..
// C-1 in order, then + bias[o]. So a row's result is the same bits alone or in any batch, and
// the same with a pre-packed weight (PackedWeight, packed once) as with a plain one (packed per
// call, tile by tile, into a per-thread buffer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tessera::backends::cpu {

// 16 floats: one AVX-512 register (two AVX2 ones; the compiler splits it elsewhere).
using Lanes = float __attribute__((vector_size(64)));

// A weight (OC, C) in panel layout, packed once (weights that stay fixed while serving).
class PackedWeight {
 public:
  PackedWeight(const float* weight, int64_t OC, int64_t C);
  int64_t OC() const { return OC_; }
  int64_t C() const { return C_; }
  int64_t panels() const { return (OC_ + 15) / 16; }
  // Panel g: C vectors, vector c = weight[16g .. 16g+15, c].
  const Lanes* panel(int64_t g) const { return data_.data() + g * C_; }
  size_t bytes() const { return data_.size() * sizeof(Lanes); }

 private:
  int64_t OC_, C_;
  std::vector<Lanes> data_;
};

// out = inp · weightᵀ + bias (bias may be null); OVERWRITES out. Any N >= 1 works; it pays off
// up to about 32 rows. Threads (OpenMP) split the output columns.
void few_rows_forward(float* out, const float* inp, const PackedWeight& weight, const float* bias,
                      int64_t N);
// The same bits from a plain weight (OC, C), packed tile by tile during the call.
void few_rows_forward(float* out, const float* inp, const float* weight, const float* bias,
                      int64_t N, int64_t C, int64_t OC);

}  // namespace tessera::backends::cpu
