// CausalSelfAttention with heads split over tp (Megatron-LM): a column-parallel fused qkv
// projection (this rank's NH_local heads' q, k, v), causal softmax attention on those heads, and
// a row-parallel output projection whose reduce over tp joins the heads. Training runs
// forward/backward over (B, T); decode runs rows of sequences at their own positions against a
// KvCache.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "models/linear.h"
#include "models/module.h"

namespace tessera::models {

class KvCache;

// Scratch shared by every layer (one layer's forward or backward runs at a time).
struct AttentionScratch {
  core::Tensor dqkv;       // (B*T, 3 C_local)
  core::Tensor datty;      // (B*T, C_local)
  core::Tensor workspace;  // backend.attention_workspace_size floats (forward and backward)
};

class CausalSelfAttention {
 public:
  // qkv_index: the ParamSpec row of the qkv weight; then qkv bias, proj weight, proj bias.
  CausalSelfAttention(const ModelContext& ctx, ArenaPlan& plan, AttentionScratch& scratch,
                      int qkv_index, int64_t B, int64_t T, int64_t C, int64_t NH_local);

  // out (n_local, C) = proj(attention(qkv(inp))), inp (n_local, C) replicated over tp, or
  // this rank's rows of each sequence (Rows; the heads see all rows.n()). Collective over
  // tp_comm. Saves qkv, the attention output and each query row's softmax
  // statistics for backward (which recomputes the probabilities).
  void forward(core::Act out, core::ConstAct inp, const Rows& rows);
  // dinp (n_local, C) OVERWRITTEN (summed over tp inside the qkv projection's backward);
  // parameter gradients ACCUMULATE. dout: (n_local, C); inp: what forward saw.
  void backward(float* dinp, const float* dout, core::ConstAct inp, const Rows& rows);
  // N decode rows: row i is a token of the sequence in slot slots[i] at position positions[i]
  // (device int32). Appends each row's k, v to `cache` at `layer`, then out (N, C) as forward
  // would give for that position. Collective over tp_comm.
  void decode(float* out, const float* inp, KvCache& cache, int layer, const int32_t* slots,
              const int32_t* positions, int64_t N);

 private:
  const ModelContext& ctx_;
  AttentionScratch& scratch_;
  int64_t C_local_, NH_local_;
  ColumnParallelLinear qkv_;
  RowParallelLinear proj_;
  core::Tensor qkv_out_;  // (B*T, 3 C_local)
  core::Tensor atty_;     // (B*T, C_local)
  core::Tensor stats_;    // (B, NH_local, T, 2): [max score, 1 / sum of exponentials] per row
};

}  // namespace tessera::models
