// Scheduler: the request side of one serving replica, free of transport and MPI (like TGI's
// router). It owns the bounded queue of waiting requests, admits them into the decode batch up to
// the Generator's slots and the KV-cache budget, turns cancellations into removals, and reports
// each request's tokens, finish reason and usage to the callback it was submitted with, keeping
// the serving metrics as it goes. (Routing over dp replicas is the Router's, router.h.)
//
// KV-cache budget (kv_budget_tokens > 0): a request reserves its footprint, min(prompt +
// max_tokens, context) token positions rounded up to whole blocks of kv_block_size, from
// admission until it finishes; it is admitted only when a slot is free and its footprint fits
// what the running requests leave of the budget. Admission stays first come, first served: a head
// request that does not fit yet holds back the ones behind it (no starvation of long requests). A
// request whose footprint exceeds the whole budget is invalid (validate_request). The budget is
// the Generator's paged KV-cache pool (models/kv_cache.h), and the Generator reserves by the same
// rule (Generator::add), so what is admitted always fits what is allocated (docs/SERVING.md).
//
// One iteration, on the loop thread (the one that calls the Engine; see run_iteration()):
//   1. plan(): pending cancellations leave the queue (reported at once) or become removals from
//      the batch; waiting requests fill the free slots, oldest first. The result is what every tp
//      rank applies (protocol.h).
//   2. Engine::apply() on every tp rank; its refusals go to on_admission_failures().
//   3. Engine::step() on every tp rank; its events go to on_events() (tokens, finishes).
// submit(), cancel(), drain(), wait_for_work() and metrics() are thread-safe (HTTP threads call
// them); plan(), on_*() and run_iteration() belong to the loop thread. Callbacks run on the loop
// thread, outside the scheduler's lock, and must not block.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "generate/generator.h"
#include "generate/sampler.h"
#include "serve/engine.h"
#include "serve/metrics.h"
#include "serve/protocol.h"

namespace tessera::serve {

// Why a request ended. kStop: the model sampled end-of-text; kLength: max_tokens reached;
// kContextFull: the sequence filled the model's context; kCancelled: cancel() (or a client gone);
// kError: the Generator refused it.
enum class Finish { kNone, kStop, kLength, kContextFull, kCancelled, kError };
const char* finish_name(Finish finish);  // "stop", "length", "context_full", "cancelled", "error"

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens not prefilled: a freed slot held them (prefix reuse)
};

// One report to a request's callback: a token (token >= 0), and/or the finish (with usage).
struct RequestEvent {
  uint64_t request_id = 0;
  int32_t token = -1;
  Finish finish = Finish::kNone;
  Usage usage;        // final counts, when finish != kNone; before it, only cached_tokens is set
  std::string error;  // why, when finish == kError
  bool has_logprobs = false;  // token >= 0 and the request asked for logprobs
  generate::TokenLogprobs logprobs;
};
using EventCallback = std::function<void(const RequestEvent&)>;

struct RequestSpec {
  std::vector<int32_t> prompt;
  generate::SamplingOptions sampling;
  int max_tokens = 16;
  bool stop_at_eot = true;
  int logprobs = -1;  // generate::GenerateOptions::logprobs: -1 none, else 0..kMaxTopLogprobs
};

struct SchedulerOptions {
  int64_t max_queue = 64;   // waiting requests beyond the free decode slots; more: kQueueFull
  int64_t max_running = 8;  // decode slots (the Generator's max_sequences)
  int64_t context = 0;      // the model's max_seq_len
  int64_t vocab_size = 0;   // token ids must lie in [0, vocab_size)
  int32_t eot_token = -1;   // end-of-text id (stop_at_eot)
  // KV-cache budget in token positions (0: none beyond the slots), and what one position costs
  // this rank (k and v of every layer, this rank's heads, float: 8 * L * C / tp bytes), for the
  // metrics and for messages; kv_cache_mb is the budget as configured, for messages.
  int64_t kv_budget_tokens = 0;
  int64_t kv_bytes_per_token = 0;
  double kv_cache_mb = 0;
  // Positions a KV-cache block holds (the Generator's KvCache): footprints are whole blocks.
  int64_t kv_block_size = 1;
};

// A request as it joins a decode batch (eot_token and use_kv_cache from `options`), and back.
// The one place a RequestSpec field becomes a wire field: a new field goes into both.
Admission to_admission(uint64_t id, RequestSpec spec, const SchedulerOptions& options);
RequestSpec to_spec(const Admission& admission);

// The KV-cache positions a request reserves while it runs: min(prompt + max_tokens, context),
// rounded up to whole blocks of options.kv_block_size.
int64_t kv_footprint(const RequestSpec& spec, const SchedulerOptions& options);
// KV-cache token positions in `mb` MiB at `bytes_per_token` (rounded down).
int64_t kv_budget_tokens(double mb, int64_t bytes_per_token);

// A request the scheduler would refuse: the field at fault and a message naming the limit.
struct RequestError {
  std::string param;
  std::string message;
};
// The Generator's rules, checked before queueing: a non-empty prompt shorter than the context,
// ids in the vocabulary, and the option rules of generate::validate (max_tokens >= 1,
// temperature >= 0, 0 < top_p <= 1, top_k >= 0).
// With a KV-cache budget, also that the request's footprint fits the whole budget.
// (Whether prompt + max_tokens fits the context is the caller's policy: a request that does not
// fit finishes kContextFull.)
std::optional<RequestError> validate_request(const RequestSpec& spec,
                                             const SchedulerOptions& options);

enum class Rejection { kNone, kInvalid, kQueueFull, kUnavailable };
struct SubmitResult {
  uint64_t id = 0;  // the request's id (from 1), when accepted
  int replica = 0;  // the dp replica that runs it (Router::submit; 0 for a Scheduler)
  Rejection rejection = Rejection::kNone;
  std::string param;    // kInvalid: the field at fault
  std::string message;  // why, naming the limit
  bool ok() const { return rejection == Rejection::kNone; }
};

class Scheduler {
 public:
  using Clock = std::function<double()>;  // seconds, monotonic
  // clock: nullptr for std::chrono::steady_clock (tests pass their own).
  explicit Scheduler(const SchedulerOptions& options, Clock clock = nullptr);
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  const SchedulerOptions& options() const { return options_; }

  // ---- Thread-safe -----------------------------------------------------------------------------
  // Queues a request, or refuses it: kInvalid (validate_request), kQueueFull (max_queue requests
  // already wait), kUnavailable (draining). `on_event` gets every event of an accepted request,
  // the last one with a finish. id: 0 to number it here (from 1); else the caller's (a Router's)
  // id, which must not be in use.
  SubmitResult submit(RequestSpec spec, EventCallback on_event, uint64_t id = 0);
  // Cancels a waiting or running request at the next plan(); a no-op once it has finished.
  void cancel(uint64_t id);
  // Ends a running request at the next plan() as finished kStop (the front end found one of its
  // stop strings): it leaves the batch like a cancelled one, but is counted and reported as
  // stopped. A no-op for a request that is not running.
  void stop(uint64_t id);
  // Stops admitting: later submits are kUnavailable; queued and running requests still finish.
  void drain();
  bool draining() const;
  // Counts a request the transport turned away before submit (malformed JSON and the like).
  void count_invalid();
  // Blocks until there is work (a waiting request, a pending cancellation, a running request),
  // drain() is called, or `seconds` pass. True when there is work or draining.
  bool wait_for_work(double seconds);
  // True when nothing waits, runs or is to be cancelled.
  bool idle() const;
  Metrics metrics() const;
  struct Load {
    int64_t running = 0, waiting = 0;
    int64_t queued = 0;  // waiting requests beyond the free slots: what max_queue bounds
  };
  Load load() const;

  // ---- Loop thread -----------------------------------------------------------------------------
  IterationChanges plan();
  void on_admission_failures(const std::vector<AdmissionFailure>& failures);
  // The replica's prompt tokens reused from freed slots so far (Engine::prefix_tokens_reused),
  // for the metrics; after each apply().
  void on_prefix_reuse(int64_t total_tokens);
  void on_events(const std::vector<SequenceEvent>& events);
  int64_t running() const;
  // plan(), engine.apply(), engine.step(), and the reports, for a replica of one rank (and the
  // tests). False when there was nothing to do.
  bool run_iteration(Engine& engine);

 private:
  struct Waiting {
    uint64_t id = 0;
    RequestSpec spec;
    EventCallback on_event;
    double arrival = 0;
  };
  struct Running {
    EventCallback on_event;
    double arrival = 0;
    bool reported = false;  // any event yet (time to first token is taken at the first)
    Usage usage;
    int64_t kv_tokens = 0;  // its KV-cache reservation (kv_footprint)
  };
  using Delivery = std::pair<EventCallback, RequestEvent>;
  bool has_work_locked() const;
  // Removes a running request with `finish`, counts it, and queues its final report.
  // Waiting requests beyond the free decode slots (mu_ held).
  int64_t queued_locked() const;
  void finish_locked(uint64_t id, Finish finish, const std::string& error, int32_t token,
                     std::vector<Delivery>& out);

  const SchedulerOptions options_;
  const Clock clock_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_;
  // Under mu_ (running_ is changed by the loop thread only, but read by idle()).
  uint64_t next_id_ = 1;
  bool draining_ = false;
  std::deque<Waiting> waiting_;
  std::unordered_set<uint64_t> cancels_;
  std::unordered_set<uint64_t> stops_;
  std::unordered_map<uint64_t, Running> running_;
  int64_t kv_used_tokens_ = 0;  // sum of running_'s kv_tokens
  Metrics metrics_;
};

}  // namespace tessera::serve
