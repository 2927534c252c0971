// CausalSelfAttention over the backend's attention kernels; shapes are per rank.
#include "models/attention.h"

#include "backends/backend.h"
#include "models/kv_cache.h"

namespace tessera::models {

CausalSelfAttention::CausalSelfAttention(const ModelContext& ctx, ArenaPlan& plan,
                                         AttentionScratch& scratch, int qkv_index, int64_t B,
                                         int64_t T, int64_t C, int64_t NH_local)
    : ctx_(ctx),
      scratch_(scratch),
      C_local_(C / ctx.tp_size),
      NH_local_(NH_local),
      qkv_(ctx, qkv_index, C, 3 * (C / ctx.tp_size)),
      proj_(ctx, qkv_index + 2, C / ctx.tp_size, C) {
  plan.add(&qkv_out_, {B * T, 3 * C_local_}, ctx.act);
  plan.add(&atty_, {B * T, C_local_}, ctx.act);
  if (!ctx.inference) plan.add(&stats_, {B, NH_local, T, 2});  // forward's softmax statistics
}

void CausalSelfAttention::forward(core::Act out, core::ConstAct inp, const Rows& rows) {
  qkv_.forward(qkv_out_, inp, rows);
  ctx_.backend.attention_forward(atty_, stats_.f32(), scratch_.workspace.f32(), qkv_out_, rows.B,
                                 rows.T, C_local_, NH_local_);
  proj_.forward(out, atty_, rows);
}

void CausalSelfAttention::backward(float* dinp, const float* dout, core::ConstAct inp,
                                   const Rows& rows) {
  proj_.backward(scratch_.datty.f32(), dout, atty_, rows);
  ctx_.backend.attention_backward(scratch_.dqkv.f32(), scratch_.workspace.f32(),
                                  scratch_.datty.f32(), qkv_out_, stats_.f32(), rows.B, rows.T,
                                  C_local_, NH_local_);
  qkv_.backward(dinp, scratch_.dqkv.f32(), inp, rows);
}

void CausalSelfAttention::decode(float* out, const float* inp, KvCache& cache, int layer,
                                 const int32_t* slots, const int32_t* positions, int64_t N) {
  qkv_.forward(qkv_out_.f32(), inp, Rows::flat(N));
  const backends::KvPages pages = cache.pages();
  ctx_.backend.kv_append(cache.k(layer), cache.v(layer), qkv_out_.f32(), pages, slots, positions, N,
                         C_local_);
  ctx_.backend.attention_decode(atty_.f32(), qkv_out_.f32(), cache.k(layer), cache.v(layer), pages,
                                slots, positions, N, C_local_, NH_local_);
  proj_.forward(out, atty_.f32(), Rows::flat(N));
}

}  // namespace tessera::models
