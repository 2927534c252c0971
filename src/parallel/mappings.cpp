// Tensor-parallel mappings (see mappings.h): the collectives of each conjugate pair and the
// column-block layout of gather/scatter along the last dim of a row-major (rows, cols) tensor.
#include "parallel/mappings.h"

#include <cstring>

#include "core/error.h"

namespace tessera::parallel {
namespace {

// out (rows, cols_local) = columns [block * cols_local, +cols_local) of in (rows, cols).
void take_column_block(float* out, const float* in, int64_t rows, int64_t cols, int64_t block,
                       int64_t cols_local) {
  if (out == in && cols_local == cols) return;  // tp = 1 in place
#pragma omp parallel for schedule(static) if (rows * cols_local > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out + r * cols_local, in + r * cols + block * cols_local,
                cols_local * sizeof(float));
  }
}

int64_t local_cols(const Communicator& tp_comm, int64_t cols) {
  TESSERA_ASSERT(cols % tp_comm.size() == 0,
                 "splitting the last dim across tp (cols must be divisible by tp size)");
  return cols / tp_comm.size();
}

// x (rows, cols) = the tp blocks x_local (rows, cols / tp) side by side in tp-rank order.
// Collective over tp_comm. The all-gather lands rank-major in workspace (tp, rows, cols_local);
// each rank's block is then copied into its columns of x.
void all_gather_last_dim(Communicator& tp_comm, float* x, const float* x_local, int64_t rows,
                         int64_t cols, float* workspace) {
  const int64_t tp = tp_comm.size();
  const int64_t cols_local = local_cols(tp_comm, cols);
  if (tp == 1) {
    if (x != x_local) std::memcpy(x, x_local, rows * cols * sizeof(float));
    return;
  }
  const int64_t block = rows * cols_local;
  tp_comm.all_gather(workspace, x_local, block);
#pragma omp parallel for collapse(2) schedule(static) if (rows * cols > (1 << 16))
  for (int64_t t = 0; t < tp; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(x + r * cols + t * cols_local, workspace + t * block + r * cols_local,
                  cols_local * sizeof(float));
    }
  }
}

int64_t local_seq(const Communicator& tp_comm, int64_t T) {
  TESSERA_ASSERT(T % tp_comm.size() == 0,
                 "splitting the sequence across tp (T must be divisible by tp size)");
  return T / tp_comm.size();
}

// Collective over tp_comm. x (B, T, C) = every rank's x_local (B, T / tp, C) along the sequence.
void all_gather_sequence(Communicator& tp_comm, float* x, const float* x_local, int64_t B,
                         int64_t T, int64_t C) {
  tp_comm.all_gather_blocks(x, x_local, B, local_seq(tp_comm, T) * C);
}

// Collective over tp_comm. x_local (B, T / tp, C) = this rank's rows of Σ_tp x (B, T, C).
void reduce_scatter_sequence(Communicator& tp_comm, float* x_local, const float* x, int64_t B,
                             int64_t T, int64_t C) {
  tp_comm.reduce_scatter_blocks(x_local, x, B, local_seq(tp_comm, T) * C);
}

}  // namespace

void copy_to_tp_backward(Communicator& tp_comm, float* dx, int64_t count) {
  if (tp_comm.size() > 1) tp_comm.all_reduce_sum(dx, count);
}

void reduce_from_tp_forward(Communicator& tp_comm, float* x, int64_t count) {
  if (tp_comm.size() > 1) tp_comm.all_reduce_sum(x, count);
}

void scatter_to_tp_forward(Communicator& tp_comm, float* x_local, const float* x, int64_t rows,
                           int64_t cols) {
  take_column_block(x_local, x, rows, cols, tp_comm.rank(), local_cols(tp_comm, cols));
}

void scatter_to_tp_backward(Communicator& tp_comm, float* dx, const float* dx_local, int64_t rows,
                            int64_t cols, float* workspace) {
  all_gather_last_dim(tp_comm, dx, dx_local, rows, cols, workspace);
}

void gather_from_tp_forward(Communicator& tp_comm, float* x, const float* x_local, int64_t rows,
                            int64_t cols, float* workspace) {
  all_gather_last_dim(tp_comm, x, x_local, rows, cols, workspace);
}

void gather_from_tp_backward(Communicator& tp_comm, float* dx_local, const float* dx, int64_t rows,
                             int64_t cols) {
  take_column_block(dx_local, dx, rows, cols, tp_comm.rank(), local_cols(tp_comm, cols));
}

void gather_from_sequence_forward(Communicator& tp_comm, float* x, const float* x_local, int64_t B,
                                  int64_t T, int64_t C) {
  all_gather_sequence(tp_comm, x, x_local, B, T, C);
}

void gather_from_sequence_backward(Communicator& tp_comm, float* dx_local, const float* dx,
                                   int64_t B, int64_t T, int64_t C) {
  reduce_scatter_sequence(tp_comm, dx_local, dx, B, T, C);
}

void reduce_scatter_to_sequence_forward(Communicator& tp_comm, float* x_local, const float* x,
                                        int64_t B, int64_t T, int64_t C) {
  reduce_scatter_sequence(tp_comm, x_local, x, B, T, C);
}

void reduce_scatter_to_sequence_backward(Communicator& tp_comm, float* dx, const float* dx_local,
                                         int64_t B, int64_t T, int64_t C) {
  all_gather_sequence(tp_comm, dx, dx_local, B, T, C);
}

}  // namespace tessera::parallel
