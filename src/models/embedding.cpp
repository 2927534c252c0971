// VocabParallelEmbedding over the backend's embedding kernels.
#include "models/embedding.h"

#include "backends/backend.h"
#include "core/error.h"
#include "parallel/mappings.h"

namespace tessera::models {

VocabParallelEmbedding::VocabParallelEmbedding(const ModelContext& ctx, int wte_index, int64_t C,
                                               int64_t vocab_start, int64_t Vp_local)
    : ctx_(ctx),
      index_(wte_index),
      C_(C),
      vocab_start_(vocab_start),
      Vp_local_(Vp_local),
      wte_(ctx.weight(wte_index)),
      wpe_(ctx.weight(wte_index + 1)),
      dwte_(ctx.grad(wte_index)),
      dwpe_(ctx.grad(wte_index + 1)) {}

void VocabParallelEmbedding::forward(core::Act out, const int32_t* tokens, const Rows& rows) {
  const int64_t B = rows.B, T = rows.T;
  backends::Backend& be = ctx_.backend;
  // The lookup, its sum over tp and the positions in fp32; bf16 activations are rounded once.
  const int64_t n_out = rows.n_local() * C_;
  float* sum = out.is_f32() ? out.f32() : ctx_.f32_rows(n_out);
  if (!rows.seq_sharded()) {
    be.embedding_forward(sum, tokens, wte_, B * T, C_, vocab_start_, Vp_local_);
    parallel::reduce_from_tp_forward(ctx_.tp_comm, sum, B * T * C_);
    be.positional_forward(sum, wpe_, B, T, C_);
    if (!out.is_f32()) be.convert(out, sum, n_out);
    return;
  }
  // The lookups of all rows, summed over tp and kept for this rank's rows [t0, t0 + T_local) of
  // each sequence, whose positions wpe[t0 + t] are then added.
  TESSERA_ASSERT(ctx_.seq && B * T * C_ <= ctx_.seq->full.numel(),
                 "fitting the embedding's partial lookups in the sequence-parallel scratch");
  float* partial = ctx_.seq->full.f32();
  be.embedding_forward(partial, tokens, wte_, B * T, C_, vocab_start_, Vp_local_);
  parallel::reduce_scatter_to_sequence_forward(ctx_.tp_comm, sum, partial, B, T, C_);
  const int64_t T_local = T / rows.seq_shards;
  be.positional_forward(sum, wpe_ + ctx_.tp_rank * T_local * C_, B, T_local, C_);
  if (!out.is_f32()) be.convert(out, sum, n_out);
}

const float* VocabParallelEmbedding::backward(const float* dout, const int32_t* tokens,
                                              const Rows& rows, bool scatter_wte) {
  const int64_t B = rows.B, T = rows.T;
  if (rows.seq_sharded()) {
    TESSERA_ASSERT(ctx_.seq && B * T * C_ <= ctx_.seq->full.numel(),
                   "fitting the embedding's gathered gradient in the sequence-parallel scratch");
    float* full = ctx_.seq->full.f32();
    parallel::reduce_scatter_to_sequence_backward(ctx_.tp_comm, full, dout, B, T, C_);
    dout = full;
  }
  if (scatter_wte) {
    ctx_.backend.embedding_backward(dwte_, dout, tokens, B * T, C_, vocab_start_, Vp_local_);
  }
  ctx_.backend.positional_backward(dwpe_, dout, B, T, C_);
  return dout;
}

void VocabParallelEmbedding::decode(float* out, const int32_t* tokens, const int32_t* positions,
                                    int64_t N) {
  ctx_.backend.embedding_forward(out, tokens, wte_, N, C_, vocab_start_, Vp_local_);
  parallel::reduce_from_tp_forward(ctx_.tp_comm, out, N * C_);
  ctx_.backend.positional_rows(out, wpe_, positions, N, C_);
}

}  // namespace tessera::models
