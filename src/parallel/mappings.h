// Tensor-parallel mappings as conjugate pairs (Megatron-LM, Shoeybi et al. 2019, section 3).
// With explicit forward/backward each mapping is two functions; each pair's backward is the
// adjoint of its forward (tests/mpi/mappings_test.cpp checks <f(x), y> = <x, f*(y)> over ranks).
// Every function with tp_comm.size() > 1 is a collective over tp_comm.
#pragma once

#include <cstdint>

#include "parallel/communicator.h"

namespace tessera::parallel {

// copy_to_tp: the input of a column-parallel layer.  forward: identity; backward: all-reduce sum.
inline void copy_to_tp_forward(Communicator&, float*, int64_t) {}
void copy_to_tp_backward(Communicator& tp_comm, float* dx, int64_t count);

// reduce_from_tp: the output of a row-parallel layer.  forward: all-reduce sum; backward: identity.
void reduce_from_tp_forward(Communicator& tp_comm, float* x, int64_t count);
inline void reduce_from_tp_backward(Communicator&, float*, int64_t) {}

// scatter_to_tp: x (rows, cols) -> this rank's column block (rows, cols / tp).
// forward: take the block; backward: all-gather the blocks along the last dim (workspace as in
// gather_from_tp_forward).
void scatter_to_tp_forward(Communicator& tp_comm, float* x_local, const float* x, int64_t rows,
                           int64_t cols);
void scatter_to_tp_backward(Communicator& tp_comm, float* dx, const float* dx_local, int64_t rows,
                            int64_t cols, float* workspace);

// gather_from_tp: x_local (rows, cols / tp) -> x (rows, cols), blocks in tp-rank order.
// forward: all-gather along the last dim; backward: take this rank's block.
// workspace: rows * cols floats, distinct from x (the all-gather lands rank-major,
// (tp, rows, cols / tp), then each rank's block is copied into its columns of x); unused at tp 1.
void gather_from_tp_forward(Communicator& tp_comm, float* x, const float* x_local, int64_t rows,
                            int64_t cols, float* workspace);
void gather_from_tp_backward(Communicator& tp_comm, float* dx_local, const float* dx, int64_t rows,
                             int64_t cols);

// Sequence parallelism (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
// Transformer Models", section 4.2.2): outside the tp regions (layernorms, residual stream) a
// tensor x (B, T, C) is split along the sequence, tp rank r holding rows [r T_local, +T_local)
// of every sequence, x_local (B, T_local, C) with T_local = T / tp. A sequence's (T, C) rows are
// its tp blocks (tp, T_local, C) in rank order, so each mapping is one blocked collective of B
// blocks, a sequence each (Communicator::all_gather_blocks / reduce_scatter_blocks: one MPI
// call, or one NCCL group, rather than one per sequence).
// x and x_local must not overlap. Precondition: T divisible by tp.

// gather_from_sequence: the input of a column-parallel layer (replaces copy_to_tp).
// forward: all-gather along the sequence, x (B, T, C) from every rank's x_local (B, T_local, C);
// backward: reduce-scatter along the sequence, dx_local = this rank's rows of Σ_tp dx.
void gather_from_sequence_forward(Communicator& tp_comm, float* x, const float* x_local, int64_t B,
                                  int64_t T, int64_t C);
void gather_from_sequence_backward(Communicator& tp_comm, float* dx_local, const float* dx,
                                   int64_t B, int64_t T, int64_t C);

// reduce_scatter_to_sequence: the output of a row-parallel layer (replaces reduce_from_tp).
// forward: reduce-scatter along the sequence, x_local (B, T_local, C) = this rank's rows of
// Σ_tp x, x (B, T, C) a partial sum on each rank; backward: all-gather along the sequence.
void reduce_scatter_to_sequence_forward(Communicator& tp_comm, float* x_local, const float* x,
                                        int64_t B, int64_t T, int64_t C);
void reduce_scatter_to_sequence_backward(Communicator& tp_comm, float* dx, const float* dx_local,
                                         int64_t B, int64_t T, int64_t C);

}  // namespace tessera::parallel
