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

}  // namespace tessera::parallel
