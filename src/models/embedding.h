// VocabParallelEmbedding with learned positions: rank r holds rows [vocab_start, +Vp_local) of
// the (padded) token table wte and the whole (replicated) position table wpe. A token outside a
// rank's rows looks up zeros there; reduce_from_tp sums the ranks' lookups into the full one;
// the position is added once, after the sum. Under sequence parallelism the sum is
// reduce-scattered along the sequence instead (reduce_scatter_to_sequence): each tp rank keeps
// its T / tp rows of each sequence and adds their positions.
#pragma once

#include <cstdint>

#include "models/module.h"

namespace tessera::models {

class VocabParallelEmbedding {
 public:
  // wte_index: the ParamSpec row of wte; wpe is the next row.
  VocabParallelEmbedding(const ModelContext& ctx, int wte_index, int64_t C, int64_t vocab_start,
                         int64_t Vp_local);

  // out (B, T, C) = wte[tokens] + wpe[t]; tokens (B, T) = (rows.B, rows.T) on the device; for
  // sharded rows out is this rank's rows of each sequence, (B, T / tp, C). Collective over
  // tp_comm.
  void forward(core::Act out, const int32_t* tokens, const Rows& rows);
  // dwte_local += dout rows at this rank's tokens, dwpe[t] += Σ_b dout[b, t] (ACCUMULATE).
  // dout (B, T, C) is the full gradient, identical on every tp rank (reduce_from_tp's backward
  // is the identity), so each rank scatters it into its own rows: no communication. For sharded
  // rows dout (B, T / tp, C) is first all-gathered along the sequence (a collective over
  // tp_comm), after which the same holds. With scatter_wte false dwte is left alone (the caller
  // hands the rows to the data-parallel reducer's sparse exchange instead). Returns the full
  // dout, (B * T, C): the rows dwte takes at the tokens (valid until the model's next call).
  const float* backward(const float* dout, const int32_t* tokens, const Rows& rows,
                        bool scatter_wte = true);
  // out (N, C) row i = wte[tokens[i]] + wpe[positions[i]]. Collective over tp_comm.
  void decode(float* out, const int32_t* tokens, const int32_t* positions, int64_t N);

  const float* wte() const { return wte_; }
  float* dwte() const { return dwte_; }
  int wte_index() const { return index_; }

 private:
  const ModelContext& ctx_;
  int index_;
  int64_t C_, vocab_start_, Vp_local_;
  float *wte_, *wpe_, *dwte_, *dwpe_;
};

}  // namespace tessera::models
