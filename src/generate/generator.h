// Autoregressive generation through the model's batched KV-cache decode (models::Gpt::decode):
// several sequences, each with its own prompt length, sampling options and seed, share one decode
// batch; a sequence may join or leave between steps (continuous batching), and a row's logits do
// not depend on the other rows, so a sequence's tokens do not depend on the batch it ran in.
// A full-recomputation path (the whole prefix through Gpt::forward each token) is kept as the
// reference the KV path is tested against. With tensor parallelism each rank's logits are
// gathered over tp and every rank samples the same token from the same counter RNG, so tp = N
// emits the tokens of tp = 1.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "generate/sampler.h"
#include "models/gpt.h"
#include "models/kv_cache.h"

namespace tessera::parallel {
class Communicator;
}

namespace tessera::generate {

struct GenerateOptions {
  SamplingOptions sampling;
  int max_tokens = 256;
  bool stop_at_eot = true;
  int32_t eot_token = -1;    // stop when sampled (not emitted)
  bool use_kv_cache = true;  // false: recompute the whole prefix each token (reference path)
  // Log-probabilities to report with each emitted token: -1 none; 0 the chosen token's; N in
  // 1..kMaxTopLogprobs also the N most likely tokens' (StepEvent::logprobs).
  int logprobs = -1;
};

constexpr int kMaxTopLogprobs = 5;

// The log-probabilities of one step, under the model's own distribution: log_softmax of the
// gathered logits over the V real tokens, before temperature, top-k and top-p (as OpenAI
// reports them). Computed in double from the gathered row, which every tp rank holds alike and
// which does not depend on the other rows of the batch, so the values are the same on every tp
// rank and in any batch.
struct TokenLogprobs {
  float logprob = 0;  // of the chosen token
  int n_top = 0;      // entries of top_* in use: the n_top most likely, most likely first
  std::array<int32_t, kMaxTopLogprobs> top_tokens{};  // ties by lower id
  std::array<float, kMaxTopLogprobs> top_logprobs{};
};

// log_softmax(logits)[token] and the n_top most likely tokens (n_top <= kMaxTopLogprobs), over
// logits (V). Deterministic: one sequential pass in double.
TokenLogprobs token_logprobs(const float* logits, int64_t V, int32_t token, int n_top);

// The rules on generation options, in one place (the command line and the server check the same):
// the sampling rules of validate(SamplingOptions), and max_tokens >= 1 (a request for no token
// is a caller's mistake, not a no-op), and -1 <= logprobs <= kMaxTopLogprobs. Generator::add(),
// generate() and generate_batch() check it too. An error names the option (as `names` calls it),
// the value and the allowed range.
core::Status validate(const GenerateOptions& options, const OptionNames& names = {});

enum class FinishReason { kNone, kLength, kEndOfText, kContextFull };

// What one sequence did in one step: a token chosen (token >= 0), and/or finished.
struct StepEvent {
  int id = -1;         // the sequence, as add() returned it
  int32_t token = -1;  // the token emitted this step; -1 when none (end-of-text, prefill chunk)
  FinishReason finished = FinishReason::kNone;
  bool has_logprobs = false;  // token >= 0 and the sequence asked for logprobs
  TokenLogprobs logprobs;
  int64_t cached_tokens = 0;  // prompt positions the sequence found cached (prefix reuse)
};

class Generator {
 public:
  // `model` must be built with T = model.max_seq_len (full recomputation needs it); it is
  // borrowed for the generator's lifetime, as is host_tp_comm: a tp communicator over host
  // memory for gathering the logits (nullptr: the model's own, which must then be host memory).
  // max_sequences: KV-cache slots (sequences decoding at once). kv_cache_blocks: the paged
  // cache's pool, in blocks of models::KvCache::kDefaultBlockSize positions; 0: every slot its
  // whole context (max_sequences x the context: never short). Allocates the cache once.
  // The model's weights must not change while the generator lives: it freezes them
  // (Backend::freeze_weights), so the backend may keep packed copies for its few-row steps.
  // With tp > 1, every call below is a collective over the tp group, made by every member with
  // the same arguments.
  explicit Generator(models::Gpt& model, int64_t max_sequences = 1,
                     parallel::Communicator* host_tp_comm = nullptr, int64_t kv_cache_blocks = 0);
  ~Generator();
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  // One prompt alone; streams each token to on_token. Errors: options that break the rules of
  // validate(GenerateOptions), empty prompt, prompt longer than the context, token ids outside
  // the vocabulary. Stops at max_tokens, at end-of-text, or when the context is full.
  core::Result<std::vector<int32_t>> generate(const std::vector<int32_t>& prompt,
                                              const GenerateOptions& options,
                                              const std::function<void(int32_t)>& on_token);
  // Several prompts decoded in one batch (options[i] for prompts[i]); each result equals what
  // generate() gives for that prompt alone, and any error of one fails the batch before a step.
  // Needs prompts.size() <= max_sequences.
  core::Result<std::vector<std::vector<int32_t>>> generate_batch(
      const std::vector<std::vector<int32_t>>& prompts,
      const std::vector<GenerateOptions>& options);

  // ---- Continuous batching (what a server's scheduler drives) ---------------------------------
  // Joins a sequence (KV path only); its prompt is prefilled by the next steps. Returns its id
  // (its cache slot) or the error of generate(), or "no free slot", or "the KV cache is
  // reserved": a sequence reserves the blocks of min(prompt + max_tokens, context) positions
  // (kv_blocks_for()) from add() until it leaves, and the running sequences' reservations never
  // exceed the pool, so a step never runs short of blocks. (A server's scheduler admits by the
  // same rule, serve/scheduler.h, so the refusal is a safety net there.)
  // Prefix reuse (on by default): a slot keeps the keys and values of the tokens its last
  // sequence fed after that sequence leaves, so add() takes the free slot whose kept tokens
  // share the longest prefix with the new prompt and prefills only the rest (at least the
  // prompt's last token, whose logits it samples from). Among equal prefixes, the slot used
  // least recently. A running sequence (one added earlier, even in the same iteration) whose
  // tokens share a longer prefix is used too: the new sequence waits until that one has cached
  // the shared positions, takes their blocks into its own table (shared by reference, copied on
  // write: models/kv_cache.h), and prefills the rest, so requests that arrive together with one
  // system prompt compute it once. A kept or shared position's keys and values are the ones a fresh
  // prefill would compute (a row's arithmetic does not depend on its batch or chunk), so reuse
  // changes no token. It pays when prompts share a start: a system prompt, or a conversation's next
  // turn, whose prompt is the last turn's prompt and answer.
  core::Result<int> add(const std::vector<int32_t>& prompt, const GenerateOptions& options);
  // Paging (models/kv_cache.h): a freed slot's kept blocks stay in the pool until a step needs
  // free blocks; then the kept blocks of the least recently taken free slots go back first.
  // Off: a freed slot's blocks go back at once.
  void set_prefix_reuse(bool on) { prefix_reuse_ = on; }
  // Prompt tokens found cached (kept or shared), over the generator's life.
  int64_t prefix_tokens_reused() const { return prefix_tokens_reused_; }
  // One iteration: a decode row for every running sequence, then pending prompt, oldest sequence
  // first, as much as fits in the model's rows and the prefill budget (chunked prefill), then a
  // token sampled for every sequence whose prompt is done. Finished sequences leave (their slot
  // is free again). Empty when idle.
  std::vector<StepEvent> step();
  // The most prompt tokens one step() prefills, over all sequences; 0 (the default): as many as
  // the model's rows allow. Decode rows do not count against it. With a budget, a long prompt is
  // prefilled over several steps while the running sequences still decode one token each step,
  // which bounds their inter-token latency; the chunking changes no token (each row's arithmetic
  // does not depend on the other rows of its step). Takes effect at the next step().
  void set_prefill_budget(int64_t tokens);
  int64_t prefill_budget() const { return prefill_budget_; }
  // One throw-away one-token step, so that the backend makes its frozen copies of the weights
  // (Backend::freeze_weights) now rather than during the first request (124M on 2 cores: ~1.5
  // s). Needs an idle generator and a free slot; emits nothing and leaves it idle.
  void warm_up();
  // Leaves at once (a cancelled request); a no-op for an unknown id.
  void remove(int id);
  bool idle() const;
  int64_t running() const;
  // The blocks a sequence of `prompt_len` tokens and `max_tokens` new ones reserves.
  int64_t kv_blocks_for(int64_t prompt_len, int64_t max_tokens) const;
  int64_t kv_blocks_reserved() const { return reserved_blocks_; }
  const models::KvCache& kv_cache() const { return cache_; }

 private:
  struct Sequence;
  // validate(options), then the prompt against this model.
  core::Status check(const std::vector<int32_t>& prompt, const GenerateOptions& options) const;
  // Gathered logits (Vp) of the last position of `tokens` by full recomputation.
  const float* recompute(const std::vector<int32_t>& tokens);
  // rows_ (M, Vp_local) of host logits -> gathered_ (M, Vp), vocabulary shards in tp-rank order.
  void gather_rows(int64_t M);
  // Samples the next token of `s` from `logits` (Vp) and applies the stop rules.
  StepEvent choose(Sequence& s, const float* logits);
  // Frees slot `slot`, keeping the tokens its sequence fed and their blocks (prefix reuse).
  void release(int slot);
  // Gives back the kept blocks of free slots, least recently taken first, until `blocks` are
  // free in the pool or no free slot keeps any.
  void free_kept_blocks(int64_t blocks);

  models::Gpt& model_;
  parallel::Communicator& host_tp_comm_;
  int64_t maxT_, Vp_local_, max_rows_;
  int64_t prefill_budget_ = 0;   // 0: max_rows_
  uint64_t next_admission_ = 0;  // Sequence::admission of the next add()
  bool prefix_reuse_ = true;
  int64_t prefix_tokens_reused_ = 0;
  int64_t reserved_blocks_ = 0;  // Σ Sequence::blocks over the running sequences
  models::KvCache cache_;
  std::vector<std::unique_ptr<Sequence>> slots_;  // null: free
  // Per slot, while it is free: the tokens whose keys and values it holds at positions 0.., and
  // when it was last taken (add() order), for the least-recently-used choice.
  std::vector<std::vector<int32_t>> kept_;
  std::vector<uint64_t> last_taken_;
  // Step buffers, sized once.
  std::vector<int32_t> tokens_, row_slots_, positions_;
  std::vector<std::pair<int, int64_t>> samplers_;  // step(): (slot, row) of each sampling sequence
  std::vector<int64_t> head_rows_;                 // step(): the rows of samplers_
  std::vector<int> prefilling_;                    // step(): slots with prompt left, oldest first
  std::vector<std::array<int64_t, 3>> fed_;        // step(): (slot, begin, end) of each fed run
  std::vector<float> rows_, gathered_, workspace_;
  std::vector<float> probs_;
  std::vector<int32_t> order_;
};

}  // namespace tessera::generate
