// Block forward, backward and decode; shapes per rank.
#include "models/block.h"

#include "backends/backend.h"

namespace tessera::models {

Block::Block(const ModelContext& ctx, ArenaPlan& plan, BlockScratch& scratch, int first_index,
             int64_t B, int64_t T, int64_t C, int64_t NH_local)
    : ctx_(ctx),
      scratch_(scratch),
      first_index_(first_index),
      C_(C),
      ln1_(ctx, plan, first_index, local_rows(ctx, B, T), C),
      attn_(ctx, plan, scratch.attention, first_index + 2, B, T, C, NH_local),
      ln2_(ctx, plan, first_index + 6, local_rows(ctx, B, T), C),
      mlp_(ctx, plan, scratch.mlp, first_index + 8, B * T, C) {
  for (core::Tensor* t : {&ln1_out_, &attproj_, &residual2_, &ln2_out_, &fcproj_, &residual3_}) {
    plan.add(t, {local_rows(ctx, B, T), C}, ctx.act);
  }
}

int64_t Block::local_rows(const ModelContext& ctx, int64_t B, int64_t T) {
  return ctx.seq ? B * (T / ctx.tp_size) : B * T;
}

void Block::forward(core::ConstAct x, const Rows& rows) {
  ln1_.forward(ln1_out_, x, rows.n_local());
  attn_.forward(attproj_, ln1_out_, rows);
  finish(x, rows);
}

void Block::decode(const float* x, KvCache& cache, int layer, const int32_t* slots,
                   const int32_t* positions, int64_t N) {
  ln1_.forward(ln1_out_.f32(), x, N);
  attn_.decode(attproj_.f32(), ln1_out_.f32(), cache, layer, slots, positions, N);
  finish(x, Rows::flat(N));
}

void Block::finish(core::ConstAct x, const Rows& rows) {
  const int64_t N = rows.n_local();
  ctx_.backend.residual_forward(residual2_, x, attproj_, N * C_);
  ln2_.forward(ln2_out_, residual2_, N);
  mlp_.forward(fcproj_, ln2_out_, rows);
  ctx_.backend.residual_forward(residual3_, residual2_, fcproj_, N * C_);
}

void Block::backward(float* dres, core::ConstAct x, const Rows& rows) {
  float* dln = scratch_.dln.f32();
  // residual3 = residual2 + mlp(ln_2(residual2)): the MLP branch sees dres; dres flows on to
  // residual2 unchanged and ln_2's backward adds the branch's input gradient to it.
  mlp_.backward(dln, dres, ln2_out_, rows);
  ln2_.backward(dres, dln, residual2_, rows);
  // residual2 = x + attn(ln_1(x)): the same, one branch down.
  attn_.backward(dln, dres, ln1_out_, rows);
  ln1_.backward(dres, dln, x, rows);
}

}  // namespace tessera::models
