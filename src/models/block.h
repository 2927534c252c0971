// Block: one pre-LayerNorm transformer layer (GPT-2), x -> x + attn(ln_1(x)) -> + mlp(ln_2(.)).
// Saves every activation its backward needs; the residual stream's gradient flows through it.
// Under sequence parallelism its layernorm/residual tensors hold this tp rank's T / tp rows of
// each sequence (B * T / tp rows instead of B * T); attention and the MLP gather and scatter.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "models/attention.h"
#include "models/layernorm.h"
#include "models/mlp.h"
#include "models/module.h"

namespace tessera::models {

class KvCache;

// Backward scratch shared by every layer.
struct BlockScratch {
  core::Tensor dln;  // (n_local, C): gradient at a layernorm's output
  AttentionScratch attention;
  MlpScratch mlp;
};

class Block {
 public:
  // first_index: the ParamSpec row of ln_1.weight; the layer's 12 rows follow in the order of
  // Gpt::param_specs. With ctx.seq set the layernorm/residual tensors get B * T / tp rows.
  Block(const ModelContext& ctx, ArenaPlan& plan, BlockScratch& scratch, int first_index, int64_t B,
        int64_t T, int64_t C, int64_t NH_local);

  // out() (n_local, C) = the layer applied to x (rows.n_local(), C). Collective over tp_comm.
  void forward(core::ConstAct x, const Rows& rows);
  // dres (n_local, C): on entry the gradient at out(); on return the gradient at x (ACCUMULATED
  // in place: both residual branches add their input gradients to it). Parameter gradients
  // ACCUMULATE. x: what forward saw.
  void backward(float* dres, core::ConstAct x, const Rows& rows);
  // out() rows 0..N-1 = the layer applied to N decode rows x (N, C) (see
  // CausalSelfAttention::decode for slots and positions).
  void decode(const float* x, KvCache& cache, int layer, const int32_t* slots,
              const int32_t* positions, int64_t N);

  core::ConstAct out() const { return residual3_; }
  // ParamSpec rows of this layer, first..first+11.
  int first_index() const { return first_index_; }
  static constexpr int kParams = 12;

 private:
  // The part of forward after attention: residual, ln_2, MLP, residual.
  void finish(core::ConstAct x, const Rows& rows);
  // Rows of the layernorm/residual tensors: B * T, or B * T / tp when ctx.seq is set.
  static int64_t local_rows(const ModelContext& ctx, int64_t B, int64_t T);

  const ModelContext& ctx_;
  BlockScratch& scratch_;
  int first_index_;
  int64_t C_;
  LayerNorm ln1_;
  CausalSelfAttention attn_;
  LayerNorm ln2_;
  Mlp mlp_;
  core::Tensor ln1_out_, attproj_, residual2_, ln2_out_, fcproj_, residual3_;  // (n_local, C)
};

}  // namespace tessera::models
