// Tensor-parallel mappings on the tp_comm of grids with tp = world size and, at 4 ranks, tp = 2:
// forward values derived from rank numbers, and each pair's adjoint identity
//   sum over ranks <f(x), y> = sum over ranks <x, f*(y)>
// where a replicated tensor (the same on every tp rank) is one tensor: its inner product is
// counted once, a sharded tensor's is summed over the tp ranks. Accumulation in double.
#include "parallel/mappings.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/philox.h"
#include "mpi_test_util.h"
#include "parallel/process_grid.h"

namespace tessera::parallel {
namespace {

using tessera::testing::world_size;

// tp = world size, and tp = 2 when the world has 4 ranks.
std::vector<int> mapping_tp_sizes() {
  std::vector<int> sizes = {world_size()};
  if (world_size() == 4) sizes.push_back(2);
  return sizes;
}

// Values in (-1, 1) from Philox. A sharded tensor puts the tp rank in the index (each rank its own
// values); a replicated one does not (every tp rank the same values). Each dp group (seed) differs.
std::vector<float> draw(const ProcessGrid& grid, uint64_t stream, int64_t n, bool sharded) {
  std::vector<float> v(n);
  const uint64_t seed = 1000 + grid.dp_rank();
  const int64_t base = sharded ? static_cast<int64_t>(grid.tp_rank()) * n : 0;
  for (int64_t i = 0; i < n; ++i) v[i] = 2.0f * core::uniform01(seed, stream, base + i) - 1.0f;
  return v;
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

double abs_dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += std::fabs(static_cast<double>(a[i]) * b[i]);
  return s;
}

// Sum over the tp group (a sharded inner product).
double tp_sum(ProcessGrid& grid, double local) {
  grid.tp_comm().all_reduce(&local, 1, ReduceOp::kSum);
  return local;
}

// lhs and rhs agree to 1e-6 relative to the sum of |terms| (random signs make the sum itself
// small at times; the float all-reduce rounds each term at 2^-24).
void expect_adjoint(double lhs, double rhs, double scale) {
  EXPECT_NEAR(lhs, rhs, 1e-6 * scale) << "<f(x), y> = " << lhs << ", <x, f*(y)> = " << rhs;
}

constexpr int64_t kRows = 3;
constexpr int64_t kColsLocal = 5;

TEST(Mappings, ReduceFromTpForwardSumsAndCopyToTpBackwardSums) {
  for (int tp : mapping_tp_sizes()) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    ProcessGrid grid(tp);
    std::vector<float> x(7), dx(7);
    for (int i = 0; i < 7; ++i) x[i] = dx[i] = static_cast<float>(10 * grid.tp_rank() + i);
    reduce_from_tp_forward(grid.tp_comm(), x.data(), 7);
    copy_to_tp_backward(grid.tp_comm(), dx.data(), 7);
    for (int i = 0; i < 7; ++i) {
      const float expected = 10.0f * tp * (tp - 1) / 2 + static_cast<float>(tp) * i;
      EXPECT_EQ(x[i], expected) << "i=" << i;
      EXPECT_EQ(dx[i], expected) << "i=" << i;
    }
    // The identities leave their argument alone.
    std::vector<float> y = {1.5f, -2.0f};
    copy_to_tp_forward(grid.tp_comm(), y.data(), 2);
    reduce_from_tp_backward(grid.tp_comm(), y.data(), 2);
    EXPECT_EQ(y, (std::vector<float>{1.5f, -2.0f}));
  }
}

TEST(Mappings, GatherPlacesBlocksInTpOrderAndScatterTakesThisRanksBlock) {
  for (int tp : mapping_tp_sizes()) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    ProcessGrid grid(tp);
    const int64_t cols = kColsLocal * tp;
    // x_local[r, j] on tp rank t = 1000 t + 10 r + j; gathered x[r, c] = 1000 (c / 5) + 10 r + c
    // % 5.
    std::vector<float> x_local(kRows * kColsLocal);
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t j = 0; j < kColsLocal; ++j) {
        x_local[r * kColsLocal + j] = 1000.0f * grid.tp_rank() + 10.0f * r + j;
      }
    }
    std::vector<float> x(kRows * cols, -1.0f), workspace(kRows * cols), dx(kRows * cols, -1.0f);
    gather_from_tp_forward(grid.tp_comm(), x.data(), x_local.data(), kRows, cols, workspace.data());
    scatter_to_tp_backward(grid.tp_comm(), dx.data(), x_local.data(), kRows, cols,
                           workspace.data());
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const float expected = 1000.0f * (c / kColsLocal) + 10.0f * r + c % kColsLocal;
        EXPECT_EQ(x[r * cols + c], expected) << "row " << r << " col " << c;
        EXPECT_EQ(dx[r * cols + c], expected) << "row " << r << " col " << c;
      }
    }
    // Taking this rank's block of the gathered tensor gives x_local back, both ways.
    std::vector<float> block(kRows * kColsLocal, -1.0f), dblock(kRows * kColsLocal, -1.0f);
    scatter_to_tp_forward(grid.tp_comm(), block.data(), x.data(), kRows, cols);
    gather_from_tp_backward(grid.tp_comm(), dblock.data(), x.data(), kRows, cols);
    EXPECT_EQ(block, x_local);
    EXPECT_EQ(dblock, x_local);
  }
}

TEST(Mappings, CopyToTpBackwardIsTheAdjointOfItsForward) {
  for (int tp : mapping_tp_sizes()) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    ProcessGrid grid(tp);
    const int64_t n = 257;
    const std::vector<float> x = draw(grid, 11, n, /*sharded=*/false);  // input: replicated
    const std::vector<float> y = draw(grid, 12, n, /*sharded=*/true);   // output: per rank
    std::vector<float> fx = x;
    copy_to_tp_forward(grid.tp_comm(), fx.data(), n);
    std::vector<float> fty = y;
    copy_to_tp_backward(grid.tp_comm(), fty.data(), n);
    const double lhs = tp_sum(grid, dot(fx, y));
    const double rhs = dot(x, fty);
    expect_adjoint(lhs, rhs, tp_sum(grid, abs_dot(fx, y)));
  }
}

TEST(Mappings, ReduceFromTpBackwardIsTheAdjointOfItsForward) {
  for (int tp : mapping_tp_sizes()) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    ProcessGrid grid(tp);
    const int64_t n = 257;
    const std::vector<float> x = draw(grid, 21, n, /*sharded=*/true);   // input: partial sums
    const std::vector<float> y = draw(grid, 22, n, /*sharded=*/false);  // output: replicated
    std::vector<float> fx = x;
    reduce_from_tp_forward(grid.tp_comm(), fx.data(), n);
    std::vector<float> fty = y;
    reduce_from_tp_backward(grid.tp_comm(), fty.data(), n);
    const double lhs = dot(fx, y);
    const double rhs = tp_sum(grid, dot(x, fty));
    expect_adjoint(lhs, rhs, tp_sum(grid, abs_dot(x, fty)));
  }
}

TEST(Mappings, ScatterToTpBackwardIsTheAdjointOfItsForward) {
  for (int tp : mapping_tp_sizes()) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    ProcessGrid grid(tp);
    const int64_t cols = kColsLocal * tp;
    const std::vector<float> x = draw(grid, 31, kRows * cols, /*sharded=*/false);
    const std::vector<float> y = draw(grid, 32, kRows * kColsLocal, /*sharded=*/true);
    std::vector<float> fx(kRows * kColsLocal), fty(kRows * cols), workspace(kRows * cols);
    scatter_to_tp_forward(grid.tp_comm(), fx.data(), x.data(), kRows, cols);
    scatter_to_tp_backward(grid.tp_comm(), fty.data(), y.data(), kRows, cols, workspace.data());
    const double lhs = tp_sum(grid, dot(fx, y));
    const double rhs = dot(x, fty);
    expect_adjoint(lhs, rhs, tp_sum(grid, abs_dot(fx, y)));
  }
}

TEST(Mappings, GatherFromTpBackwardIsTheAdjointOfItsForward) {
  for (int tp : mapping_tp_sizes()) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    ProcessGrid grid(tp);
    const int64_t cols = kColsLocal * tp;
    const std::vector<float> x = draw(grid, 41, kRows * kColsLocal, /*sharded=*/true);
    const std::vector<float> y = draw(grid, 42, kRows * cols, /*sharded=*/false);
    std::vector<float> fx(kRows * cols), fty(kRows * kColsLocal), workspace(kRows * cols);
    gather_from_tp_forward(grid.tp_comm(), fx.data(), x.data(), kRows, cols, workspace.data());
    gather_from_tp_backward(grid.tp_comm(), fty.data(), y.data(), kRows, cols);
    const double lhs = dot(fx, y);
    const double rhs = tp_sum(grid, dot(x, fty));
    expect_adjoint(lhs, rhs, abs_dot(fx, y));
  }
}

// Sequence parallelism: (B, T, C) with T = kSeqLocal * tp rows per sequence.
constexpr int64_t kSeqB = 3;
constexpr int64_t kSeqLocal = 2;
constexpr int64_t kSeqC = 5;

TEST(Mappings, GatherFromSequencePlacesBlocksInSequenceOrderAndReduceScatterSumsThisRanksRows) {
  for (int tp : mapping_tp_sizes()) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    ProcessGrid grid(tp);
    const int64_t T = kSeqLocal * tp, r = grid.tp_rank();
    // x_local[b, t, c] on tp rank r = 1000 r + 100 b + 10 t + c; gathered x[b, t, c] =
    // 1000 (t / kSeqLocal) + 100 b + 10 (t % kSeqLocal) + c.
    std::vector<float> x_local(kSeqB * kSeqLocal * kSeqC);
    for (int64_t b = 0; b < kSeqB; ++b) {
      for (int64_t t = 0; t < kSeqLocal; ++t) {
        for (int64_t c = 0; c < kSeqC; ++c) {
          x_local[(b * kSeqLocal + t) * kSeqC + c] = 1000.0f * r + 100.0f * b + 10.0f * t + c;
        }
      }
    }
    std::vector<float> x(kSeqB * T * kSeqC, -1.0f), dx(kSeqB * T * kSeqC, -1.0f);
    gather_from_sequence_forward(grid.tp_comm(), x.data(), x_local.data(), kSeqB, T, kSeqC);
    reduce_scatter_to_sequence_backward(grid.tp_comm(), dx.data(), x_local.data(), kSeqB, T, kSeqC);
    for (int64_t b = 0; b < kSeqB; ++b) {
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t c = 0; c < kSeqC; ++c) {
          const float expected =
              1000.0f * (t / kSeqLocal) + 100.0f * b + 10.0f * (t % kSeqLocal) + c;
          EXPECT_EQ(x[(b * T + t) * kSeqC + c], expected) << "b " << b << " t " << t << " c " << c;
          EXPECT_EQ(dx[(b * T + t) * kSeqC + c], expected) << "b " << b << " t " << t;
        }
      }
    }
    // p[b, t, c] on tp rank r = r + 100 b + 10 t + c: this rank's rows of the sum over ranks are
    // tp (tp - 1) / 2 + tp (100 b + 10 (r kSeqLocal + t) + c), both ways.
    std::vector<float> p(kSeqB * T * kSeqC);
    for (int64_t b = 0; b < kSeqB; ++b) {
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t c = 0; c < kSeqC; ++c) {
          p[(b * T + t) * kSeqC + c] = static_cast<float>(r) + 100.0f * b + 10.0f * t + c;
        }
      }
    }
    std::vector<float> s(kSeqB * kSeqLocal * kSeqC, -1.0f), ds(s.size(), -1.0f);
    reduce_scatter_to_sequence_forward(grid.tp_comm(), s.data(), p.data(), kSeqB, T, kSeqC);
    gather_from_sequence_backward(grid.tp_comm(), ds.data(), p.data(), kSeqB, T, kSeqC);
    for (int64_t b = 0; b < kSeqB; ++b) {
      for (int64_t t = 0; t < kSeqLocal; ++t) {
        for (int64_t c = 0; c < kSeqC; ++c) {
          const float expected =
              static_cast<float>(tp * (tp - 1) / 2) +
              static_cast<float>(tp) * (100.0f * b + 10.0f * (r * kSeqLocal + t) + c);
          EXPECT_EQ(s[(b * kSeqLocal + t) * kSeqC + c], expected) << "b " << b << " t " << t;
          EXPECT_EQ(ds[(b * kSeqLocal + t) * kSeqC + c], expected) << "b " << b << " t " << t;
        }
      }
    }
  }
}

// gather_from_sequence maps this rank's rows (sharded) to the whole sequence, which each tp rank
// then uses on its own (as copy_to_tp's output): y, the gradient at the output, is per rank.
TEST(Mappings, GatherFromSequenceBackwardIsTheAdjointOfItsForward) {
  for (int tp : mapping_tp_sizes()) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    ProcessGrid grid(tp);
    const int64_t T = kSeqLocal * tp, n_local = kSeqB * kSeqLocal * kSeqC, n = kSeqB * T * kSeqC;
    const std::vector<float> x = draw(grid, 51, n_local, /*sharded=*/true);
    const std::vector<float> y = draw(grid, 52, n, /*sharded=*/true);
    std::vector<float> fx(n), fty(n_local);
    gather_from_sequence_forward(grid.tp_comm(), fx.data(), x.data(), kSeqB, T, kSeqC);
    gather_from_sequence_backward(grid.tp_comm(), fty.data(), y.data(), kSeqB, T, kSeqC);
    const double lhs = tp_sum(grid, dot(fx, y));
    const double rhs = tp_sum(grid, dot(x, fty));
    expect_adjoint(lhs, rhs, tp_sum(grid, abs_dot(fx, y)));
  }
}

// reduce_scatter_to_sequence maps per-rank partial sums (B, T, C) to this rank's rows of their
// sum: input and output are both per rank.
TEST(Mappings, ReduceScatterToSequenceBackwardIsTheAdjointOfItsForward) {
  for (int tp : mapping_tp_sizes()) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    ProcessGrid grid(tp);
    const int64_t T = kSeqLocal * tp, n_local = kSeqB * kSeqLocal * kSeqC, n = kSeqB * T * kSeqC;
    const std::vector<float> x = draw(grid, 61, n, /*sharded=*/true);
    const std::vector<float> y = draw(grid, 62, n_local, /*sharded=*/true);
    std::vector<float> fx(n_local), fty(n);
    reduce_scatter_to_sequence_forward(grid.tp_comm(), fx.data(), x.data(), kSeqB, T, kSeqC);
    reduce_scatter_to_sequence_backward(grid.tp_comm(), fty.data(), y.data(), kSeqB, T, kSeqC);
    const double lhs = tp_sum(grid, dot(fx, y));
    const double rhs = tp_sum(grid, dot(x, fty));
    expect_adjoint(lhs, rhs, tp_sum(grid, abs_dot(x, fty)));
  }
}

}  // namespace
}  // namespace tessera::parallel
