// Deterministic, data-parallel-shardable batches of (input, target) sequences over token shards.
// Rule: the order of every epoch is a pure function of (seed, epoch), so any dp layout that asks
// for the same global batches sees the same sequences, and a saved cursor resumes exactly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/token_shard.h"

namespace tessera::data {

// Where the loader stands: `position` is the next index into epoch `epoch`'s permutation.
// Checkpointed with the model so a resumed run continues with the same sequences.
struct LoaderCursor {
  int64_t epoch = 0;
  int64_t position = 0;
};

// Sequence s is T + 1 consecutive tokens of one shard starting at stride T (a shard of n tokens
// holds (n - 1) / T of them; none crosses a shard boundary): input = tokens[s*T, s*T + T),
// target = tokens[s*T + 1, s*T + T + 1). Epoch e visits all sequences in the order of sorting
// them by a Philox draw keyed by (seed, RngStream::kDataOrder, e, s). Each step takes
// `global_batch` consecutive sequences of that order; an epoch's tail too short for a full batch
// is skipped. A dp rank asks for its slice [first, first + count) of the global batch, so dp = N
// ranks with count = b at first = dp_rank * b see exactly what dp = 1 sees with count = N * b.
// Not thread-safe; each rank owns its loader.
class DataLoader {
 public:
  // `paths`: one or more shard files separated by commas. T: sequence length (> 0).
  static core::Result<DataLoader> open(const std::string& paths, int64_t T, uint64_t seed);

  // Checks that the data holds at least `global_batch` sequences; call it before training (on
  // every rank) so a too-small dataset is a clear error rather than a thrown one.
  core::Status validate_batch(int64_t global_batch) const;

  // Fills sequences [first, first + count) of the next global batch into inputs and targets
  // (each count x T, row-major), then advances the cursor by global_batch. Preconditions:
  // 0 <= first, 0 <= count, first + count <= global_batch; throws tessera::Error with
  // validate_batch's message when the data holds fewer than global_batch sequences. Allocates
  // nothing, except at the first batch of an epoch (which draws that epoch's order).
  void next_batch(int64_t global_batch, int64_t first, int64_t count, int32_t* inputs,
                  int32_t* targets);

  LoaderCursor cursor() const { return cursor_; }
  void set_cursor(LoaderCursor c) { cursor_ = c; }

  int64_t num_sequences() const { return num_sequences_; }
  int64_t num_tokens() const { return num_tokens_; }
  int64_t seq_len() const { return T_; }
  // Global index of the sequence at `position` of epoch `epoch`'s order (for tests and tools).
  int64_t sequence_at(int64_t epoch, int64_t position);

 private:
  DataLoader() = default;
  void ensure_order(int64_t epoch);

  std::string paths_;
  std::vector<TokenShard> shards_;
  std::vector<int64_t> first_sequence_;  // per shard: global index of its first sequence
  int64_t T_ = 0;
  uint64_t seed_ = 0;
  int64_t num_sequences_ = 0;
  int64_t num_tokens_ = 0;
  LoaderCursor cursor_;
  int64_t order_epoch_ = -1;    // the epoch `order_` belongs to
  std::vector<int64_t> order_;  // permutation of [0, num_sequences_)
  std::vector<int32_t> row_;    // next_batch's T + 1 tokens, sized once: no allocation per step
};

}  // namespace tessera::data
