// Batched KV-cache generation and the full-recomputation reference; see generator.h.
#include "generate/generator.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "backends/backend.h"
#include "core/error.h"
#include "parallel/communicator.h"
#include "parallel/mappings.h"

namespace tessera::generate {

struct Generator::Sequence {
  std::vector<int32_t> tokens;  // prompt, then every token emitted
  int64_t prompt_len = 0;
  int64_t cached = 0;  // positions already in the KV cache
  int generated = 0;
  uint64_t admission = 0;  // add() order: prompts are prefilled oldest first
  int64_t reused = 0;      // prompt positions found cached (prefix reuse): kept, then shared
  int64_t blocks = 0;      // KV-cache blocks reserved (kv_blocks_for)
  // Waiting for the running sequence in slot share_from (its add() number share_admission) to
  // cache positions 0 .. share_len - 1, to share their blocks (prefix reuse); -1: not waiting.
  int share_from = -1;
  uint64_t share_admission = 0;
  int64_t share_len = 0;
  GenerateOptions options;
};

namespace {
parallel::Communicator& host_comm(models::Gpt& model, parallel::Communicator* host_tp_comm) {
  if (host_tp_comm) return *host_tp_comm;
  TESSERA_ASSERT(model.backend().device() == core::Device::kCpu || model.tp_size() == 1,
                 "generating with tp > 1 on a device backend needs a host tp communicator");
  return model.tp_comm();
}
}  // namespace

Generator::Generator(models::Gpt& model, int64_t max_sequences,
                     parallel::Communicator* host_tp_comm, int64_t kv_cache_blocks)
    : model_(model),
      host_tp_comm_(host_comm(model, host_tp_comm)),
      maxT_(model.config().max_seq_len),
      Vp_local_(model.padded_vocab_local()),
      max_rows_(model.max_batch() * model.max_seq()),
      cache_(model, max_sequences, kv_cache_blocks),
      slots_(max_sequences),
      kept_(max_sequences),
      last_taken_(max_sequences, 0) {
  TESSERA_ASSERT(model.max_seq() == maxT_,
                 "building a generator on a model sized for the full context");
  tokens_.resize(max_rows_);
  row_slots_.resize(max_rows_);
  positions_.resize(max_rows_);
  samplers_.reserve(max_sequences);
  const int64_t Vp = Vp_local_ * model.tp_size();
  rows_.resize(max_sequences * Vp_local_);
  gathered_.resize(max_sequences * Vp);
  workspace_.resize(max_sequences * Vp);
  head_rows_.reserve(max_sequences);
  prefilling_.reserve(max_sequences);
  fed_.reserve(max_sequences);
  // The weights stay fixed while generating: the backend may pack them for few-row steps.
  model_.backend().freeze_weights(true);
}

Generator::~Generator() { model_.backend().freeze_weights(false); }

core::Status validate(const GenerateOptions& o, const OptionNames& names) {
  TESSERA_RETURN_IF_ERROR(validate(o.sampling, names));
  if (o.max_tokens < 1) {
    return core::Status::error(std::string(names.max_tokens) + " " + std::to_string(o.max_tokens) +
                               " is out of range: it must be >= 1 (the most tokens to generate), "
                               "e.g. 256");
  }
  if (o.logprobs < -1 || o.logprobs > kMaxTopLogprobs) {
    return core::Status::error("logprobs " + std::to_string(o.logprobs) +
                               " is out of range: it must lie in [0, " +
                               std::to_string(kMaxTopLogprobs) +
                               "] (0: the chosen token's log-probability, N: also the N most "
                               "likely tokens')");
  }
  return core::Status::ok();
}

TokenLogprobs token_logprobs(const float* logits, int64_t V, int32_t token, int n_top) {
  TESSERA_ASSERT(V >= 1 && token >= 0 && token < V && n_top >= 0 && n_top <= kMaxTopLogprobs,
                 "log-probabilities of a token inside the vocabulary");
  // log_softmax(z)_t = z_t - (m + log sum_j exp(z_j - m)), m = max z: no term overflows.
  double m = logits[0];
  for (int64_t i = 1; i < V; ++i) m = std::max(m, static_cast<double>(logits[i]));
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(logits[i]) - m);
  const double log_z = m + std::log(sum);
  TokenLogprobs out;
  out.logprob = static_cast<float>(static_cast<double>(logits[token]) - log_z);
  // The n_top largest logits, by insertion into a short sorted list (higher first, then lower id).
  out.n_top = static_cast<int>(std::min<int64_t>(n_top, V));
  int filled = 0;
  for (int64_t i = 0; i < V && out.n_top > 0; ++i) {
    const float z = logits[i];
    if (filled == out.n_top && !(z > logits[out.top_tokens[filled - 1]])) continue;
    int at = filled < out.n_top ? filled++ : filled - 1;
    while (at > 0 && z > logits[out.top_tokens[at - 1]]) {
      out.top_tokens[at] = out.top_tokens[at - 1];
      --at;
    }
    out.top_tokens[at] = static_cast<int32_t>(i);
  }
  for (int k = 0; k < out.n_top; ++k) {
    out.top_logprobs[k] =
        static_cast<float>(static_cast<double>(logits[out.top_tokens[k]]) - log_z);
  }
  return out;
}

core::Status Generator::check(const std::vector<int32_t>& prompt,
                              const GenerateOptions& options) const {
  TESSERA_RETURN_IF_ERROR(generate::validate(options));
  if (!options.use_kv_cache && model_.inference_only()) {
    return core::Status::error(
        "generating without the KV cache (full recomputation) needs a model built for training "
        "(models::Gpt::Purpose::kTrain): this one was built for decode only");
  }
  const int64_t V = model_.vocab_size();
  if (prompt.empty()) {
    return core::Status::error("the prompt is empty; give at least one token of text");
  }
  if (static_cast<int64_t>(prompt.size()) >= maxT_) {
    return core::Status::error("the prompt is " + std::to_string(prompt.size()) +
                               " tokens, the model's context (model.max_seq_len) is " +
                               std::to_string(maxT_) +
                               " and at least one position must remain; "
                               "shorten the prompt");
  }
  for (int32_t t : prompt) {
    if (t < 0 || t >= V) {
      return core::Status::error("prompt token id " + std::to_string(t) +
                                 " is outside the vocabulary (" + std::to_string(V) +
                                 "); use the tokenizer the model was trained with");
    }
  }
  return core::Status::ok();
}

void Generator::gather_rows(int64_t M) {
  const int64_t Vp = Vp_local_ * model_.tp_size();
  parallel::gather_from_tp_forward(host_tp_comm_, gathered_.data(), rows_.data(), M, Vp,
                                   workspace_.data());
}

const float* Generator::recompute(const std::vector<int32_t>& tokens) {
  const int64_t T = static_cast<int64_t>(tokens.size());
  model_.forward(tokens.data(), nullptr, 1, T);
  model_.backend().copy_to_host(rows_.data(), model_.logits() + (T - 1) * Vp_local_,
                                Vp_local_ * sizeof(float));
  gather_rows(1);
  return gathered_.data();
}

StepEvent Generator::choose(Sequence& s, const float* logits) {
  StepEvent e;
  const int32_t next = sample_token(logits, model_.vocab_size(), s.options.sampling,
                                    static_cast<uint64_t>(s.generated), probs_, order_);
  ++s.generated;
  if (s.options.stop_at_eot && next == s.options.eot_token) {
    e.finished = FinishReason::kEndOfText;
    return e;
  }
  e.token = next;
  if (s.options.logprobs >= 0) {
    e.has_logprobs = true;
    e.logprobs = token_logprobs(logits, model_.vocab_size(), next, s.options.logprobs);
  }
  s.tokens.push_back(next);
  if (s.generated >= s.options.max_tokens) {
    e.finished = FinishReason::kLength;
  } else if (static_cast<int64_t>(s.tokens.size()) >= maxT_) {
    e.finished = FinishReason::kContextFull;
  }
  return e;
}

int64_t Generator::kv_blocks_for(int64_t prompt_len, int64_t max_tokens) const {
  return cache_.blocks_for(std::min(prompt_len + max_tokens, maxT_));
}

core::Result<int> Generator::add(const std::vector<int32_t>& prompt,
                                 const GenerateOptions& options) {
  TESSERA_RETURN_IF_ERROR(check(prompt, options));
  const int64_t blocks = kv_blocks_for(static_cast<int64_t>(prompt.size()), options.max_tokens);
  if (reserved_blocks_ + blocks > cache_.n_blocks()) {
    return core::Status::error(
        "the KV cache cannot hold this sequence now: it reserves " + std::to_string(blocks) +
        " blocks of " + std::to_string(cache_.block_size()) + " positions (prompt + max_tokens), " +
        "and the running sequences hold " + std::to_string(reserved_blocks_) + " of the " +
        std::to_string(cache_.n_blocks()) +
        "; wait for one to finish, or give the cache more blocks");
  }
  // The free slot with the longest kept prefix of the prompt (short of its last token), then
  // the least recently taken.
  int best = -1;
  int64_t best_len = -1;
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i]) continue;
    int64_t len = 0;
    if (prefix_reuse_) {
      const std::vector<int32_t>& kept = kept_[i];
      const int64_t most = std::min<int64_t>(kept.size(), prompt.size() - 1);
      while (len < most && kept[len] == prompt[len]) ++len;
    }
    if (len > best_len || (len == best_len && last_taken_[i] < last_taken_[best])) {
      best = static_cast<int>(i);
      best_len = len;
    }
  }
  if (best >= 0) {
    // A running sequence sharing a longer prefix (its tokens so far; the oldest among equals):
    // wait for it and copy (step()).
    int source = -1;
    int64_t source_len = best_len;
    for (size_t i = 0; i < slots_.size() && prefix_reuse_; ++i) {
      const Sequence* r = slots_[i].get();
      if (!r) continue;
      const int64_t most = std::min<int64_t>(r->tokens.size(), prompt.size() - 1);
      int64_t len = 0;
      while (len < most && r->tokens[len] == prompt[len]) ++len;
      if (len > source_len ||
          (len == source_len && source >= 0 && r->admission < slots_[source]->admission)) {
        source = static_cast<int>(i);
        source_len = len;
      }
    }
    auto s = std::make_unique<Sequence>();
    s->tokens = prompt;
    s->prompt_len = static_cast<int64_t>(prompt.size());
    s->cached = best_len;
    s->reused = best_len;
    s->options = options;
    s->admission = next_admission_++;
    s->blocks = blocks;
    reserved_blocks_ += blocks;
    if (source >= 0) {
      s->share_from = source;
      s->share_admission = slots_[source]->admission;
      s->share_len = source_len;
    }
    slots_[best] = std::move(s);
    last_taken_[best] = next_admission_;
    kept_[best].clear();
    cache_.truncate(best, best_len);  // the kept blocks past the shared prefix go back
    prefix_tokens_reused_ += best_len;
    return best;
  }
  return core::Status::error("all " + std::to_string(slots_.size()) +
                             " sequence slots are in use; wait for one to finish");
}

void Generator::set_prefill_budget(int64_t tokens) {
  TESSERA_ASSERT(tokens >= 0, "a prefill budget of >= 0 tokens (0: the model's rows)");
  prefill_budget_ = tokens;
}

void Generator::release(int slot) {
  Sequence& s = *slots_[slot];
  reserved_blocks_ -= s.blocks;
  if (prefix_reuse_) {
    kept_[slot].assign(s.tokens.begin(), s.tokens.begin() + s.cached);
  } else {
    cache_.truncate(slot, 0);
  }
  slots_[slot].reset();
}

void Generator::free_kept_blocks(int64_t blocks) {
  while (cache_.free_blocks() < blocks) {
    int oldest = -1;
    for (size_t i = 0; i < slots_.size(); ++i) {
      if (slots_[i] || cache_.held_blocks(static_cast<int64_t>(i)) == 0) continue;
      if (oldest < 0 || last_taken_[i] < last_taken_[oldest]) oldest = static_cast<int>(i);
    }
    if (oldest < 0) return;
    cache_.truncate(oldest, 0);
    kept_[oldest].clear();
  }
}

void Generator::remove(int id) {
  if (id >= 0 && id < static_cast<int>(slots_.size()) && slots_[id]) release(id);
}

bool Generator::idle() const { return running() == 0; }

void Generator::warm_up() {
  TESSERA_ASSERT(idle(), "warm_up() runs alone: no sequence of add() may be running");
  GenerateOptions o;
  o.max_tokens = 1;
  o.stop_at_eot = false;
  o.sampling.temperature = 0;
  auto id = add({0}, o);
  TESSERA_ASSERT(id.is_ok(), "warming up the generator (a one-token prompt in a free slot)");
  while (!idle()) step();
}

int64_t Generator::running() const {
  return std::count_if(slots_.begin(), slots_.end(), [](const auto& s) { return s != nullptr; });
}

std::vector<StepEvent> Generator::step() {
  std::vector<StepEvent> events;
  // Rows: first one decode row for each sequence whose prompt is cached (its newest token),
  // then prompt chunks of the others, oldest first, while rows and the prefill budget remain. A
  // sequence samples this step when its last uncached token was fed: record the row that ends it.
  int64_t N = 0;
  std::vector<std::pair<int, int64_t>>& samplers = samplers_;  // (slot, row of its last token)
  samplers.clear();
  fed_.clear();
  auto feed = [&](int slot, Sequence& s, int64_t count) {
    fed_.push_back({slot, s.cached, s.cached + count});
    for (int64_t k = 0; k < count; ++k) {
      tokens_[N] = s.tokens[s.cached];
      row_slots_[N] = slot;
      positions_[N] = static_cast<int32_t>(s.cached);
      ++s.cached;
      ++N;
    }
    if (s.cached == static_cast<int64_t>(s.tokens.size())) samplers.emplace_back(slot, N - 1);
  };
  // Sequences waiting to copy a shared prefix (prefix reuse): copy once the source has cached
  // it; stop waiting if the source left (then prefill it).
  for (size_t i = 0; i < slots_.size(); ++i) {
    Sequence* s = slots_[i].get();
    if (!s || s->share_from < 0) continue;
    const Sequence* src = slots_[s->share_from].get();
    if (!src || src->admission != s->share_admission) {
      s->share_from = -1;
    } else if (src->cached >= s->share_len) {
      // The shared positions' blocks by reference (the kept ones hold the same keys and values).
      cache_.truncate(static_cast<int64_t>(i), 0);
      cache_.share(s->share_from, static_cast<int64_t>(i), s->share_len);
      s->reused += s->share_len - s->cached;
      prefix_tokens_reused_ += s->share_len - s->cached;
      s->cached = s->share_len;
      s->share_from = -1;
    }
  }
  prefilling_.clear();
  for (size_t i = 0; i < slots_.size(); ++i) {
    Sequence* s = slots_[i].get();
    if (!s) continue;
    if (s->cached < s->prompt_len) {
      if (s->share_from < 0) prefilling_.push_back(static_cast<int>(i));
    } else if (N < max_rows_) {
      feed(static_cast<int>(i), *s, 1);
    }
  }
  std::sort(prefilling_.begin(), prefilling_.end(),
            [&](int a, int b) { return slots_[a]->admission < slots_[b]->admission; });
  int64_t budget = prefill_budget_ > 0 ? prefill_budget_ : max_rows_;
  for (int slot : prefilling_) {
    Sequence& s = *slots_[slot];
    const int64_t count = std::min({s.prompt_len - s.cached, max_rows_ - N, budget});
    if (count <= 0) break;
    feed(slot, s, count);
    budget -= count;
  }
  if (N == 0) return events;
  // The blocks the fed rows write into (Gpt::decode makes them writable): kept blocks of free
  // slots go back to the pool first if it is short. (Shared blocks written by two slots this
  // step are counted twice: an overestimate, which only gives back kept blocks sooner.)
  int64_t needed = 0;
  for (const auto& [slot, begin, end] : fed_) needed += cache_.blocks_needed(slot, begin, end);
  free_kept_blocks(needed);
  // The LM head runs on the sampling rows only: a prefill chunk's other rows need no logits.
  const int64_t M = static_cast<int64_t>(samplers.size());
  head_rows_.clear();
  for (const auto& sr : samplers) head_rows_.push_back(sr.second);
  const float* logits = model_.decode(cache_, tokens_.data(), row_slots_.data(), positions_.data(),
                                      N, head_rows_.data(), M);
  if (M > 0) {
    model_.backend().copy_to_host(rows_.data(), logits, M * Vp_local_ * sizeof(float));
  }
  gather_rows(M);
  const int64_t Vp = Vp_local_ * model_.tp_size();
  for (int64_t m = 0; m < M; ++m) {
    const int slot = samplers[m].first;
    StepEvent e = choose(*slots_[slot], gathered_.data() + m * Vp);
    e.id = slot;
    e.cached_tokens = slots_[slot]->reused;
    events.push_back(e);
    if (e.finished != FinishReason::kNone) release(slot);
  }
  return events;
}

core::Result<std::vector<int32_t>> Generator::generate(
    const std::vector<int32_t>& prompt, const GenerateOptions& o,
    const std::function<void(int32_t)>& on_token) {
  TESSERA_RETURN_IF_ERROR(check(prompt, o));
  std::vector<int32_t> out;
  if (o.use_kv_cache) {
    TESSERA_ASSERT(idle(), "generate() runs alone: no sequence of add() may be running");
    auto id = add(prompt, o);
    if (!id) return id.status();
    while (!idle()) {
      for (const StepEvent& e : step()) {
        if (e.token >= 0) {
          out.push_back(e.token);
          if (on_token) on_token(e.token);
        }
      }
    }
    return out;
  }
  Sequence s;
  s.tokens = prompt;
  s.options = o;
  const float* logits = recompute(s.tokens);
  while (true) {
    const StepEvent e = choose(s, logits);
    if (e.token >= 0) {
      out.push_back(e.token);
      if (on_token) on_token(e.token);
    }
    if (e.finished != FinishReason::kNone) break;
    logits = recompute(s.tokens);
  }
  return out;
}

core::Result<std::vector<std::vector<int32_t>>> Generator::generate_batch(
    const std::vector<std::vector<int32_t>>& prompts, const std::vector<GenerateOptions>& options) {
  TESSERA_ASSERT(prompts.size() == options.size(), "one GenerateOptions per prompt");
  TESSERA_ASSERT(idle(), "generate_batch() runs alone: no sequence of add() may be running");
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (auto st = check(prompts[i], options[i]); !st) {
      return st.with_context("prompt " + std::to_string(i) + ": ");
    }
  }
  std::vector<std::vector<int32_t>> out(prompts.size());
  std::vector<int> ids;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto id = add(prompts[i], options[i]);
    if (!id) {
      for (int added : ids) remove(added);
      return id.status();
    }
    ids.push_back(*id);
  }
  while (!idle()) {
    for (const StepEvent& e : step()) {
      if (e.token < 0) continue;
      const size_t i = std::find(ids.begin(), ids.end(), e.id) - ids.begin();
      out[i].push_back(e.token);
    }
  }
  return out;
}

}  // namespace tessera::generate
