// Serving's scheduler side without HTTP or MPI (src/serve): requests submitted to the Scheduler
// and decoded through an Engine over the small test model give, each, exactly the tokens the
// Generator gives that request alone, whatever else is queued or running (batch invariance);
// the queue is bounded; cancellation removes a request from the queue or from the batch; finish
// reasons, usage and metrics are right; draining refuses new work and finishes the rest; a
// follower engine fed the encoded changes mirrors the leader (what tp > 1 relies on); the wire
// format round-trips and rejects damage; the Prometheus text is well formed.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "generate/generator.h"
#include "models/gpt.h"
#include "serve/engine.h"
#include "serve/metrics.h"
#include "serve/protocol.h"
#include "serve/scheduler.h"
#include "serve_test_util.h"
#include "test_models.h"

namespace tessera::serve {
namespace {

using testing::kSmallContext;
using testing::kSmallVocab;

using testing::small_prompt;

RequestSpec spec_for(int i, int max_tokens = 0) {
  RequestSpec s;
  s.prompt = small_prompt(3 + 4 * (i % 5), i);
  s.max_tokens = max_tokens > 0 ? max_tokens : 6 + 2 * i;
  s.stop_at_eot = false;
  s.sampling.temperature = i % 2 == 0 ? 0.0f : 0.9f;
  s.sampling.top_k = i % 3 == 0 ? 0 : 20;
  s.sampling.seed = 1000 + i;
  return s;
}

using test::Received;
using test::record;

class ServeSchedulerTest : public ::testing::Test {
 protected:
  ServeSchedulerTest() : gpt_(testing::small_generation_model(), 1, kSmallContext) {
    gpt_.init_weights(11);
  }

  // The tokens of `spec` generated alone by a one-slot Generator.
  std::vector<int32_t> alone(const RequestSpec& spec, int32_t eot_token = -1) {
    generate::Generator g(gpt_, 1);
    generate::GenerateOptions o;
    o.sampling = spec.sampling;
    o.max_tokens = spec.max_tokens;
    o.stop_at_eot = spec.stop_at_eot;
    o.eot_token = eot_token;
    auto out = g.generate(spec.prompt, o, nullptr);
    EXPECT_TRUE(out.is_ok()) << out.status().message();
    return out.is_ok() ? *out : std::vector<int32_t>{};
  }

  uint64_t submit(Scheduler& s, const RequestSpec& spec, std::map<uint64_t, Received>& got) {
    // The id is not known before submit returns: the callback finds its entry by event id.
    SubmitResult r = s.submit(spec, record(got));
    EXPECT_TRUE(r.ok()) << r.message;
    return r.id;
  }

  // Iterations until the scheduler is idle (bounded, so a bug cannot hang the test).
  static int run_until_idle(Scheduler& s, Engine& engine, double* clock = nullptr) {
    int iterations = 0;
    while (!s.idle() && iterations < 10000) {
      if (clock) *clock += 0.01;
      s.run_iteration(engine);
      ++iterations;
    }
    EXPECT_TRUE(s.idle()) << "the scheduler did not drain in 10000 iterations";
    return iterations;
  }

  models::Gpt gpt_;
};

TEST_F(ServeSchedulerTest, EachRequestGetsItsAloneTokensWhateverTheBatch) {
  // 7 requests, 3 slots: later ones wait in the queue and join a running batch as slots free.
  generate::Generator generator(gpt_, 3);
  Engine engine(generator);
  Scheduler s(test::scheduler_options(3, 16));
  std::map<uint64_t, Received> got;
  std::vector<uint64_t> ids;
  for (int i = 0; i < 7; ++i) ids.push_back(submit(s, spec_for(i), got));
  EXPECT_EQ(s.metrics().waiting, 7);
  run_until_idle(s, engine);
  for (int i = 0; i < 7; ++i) {
    const Received& g = got[ids[i]];
    const RequestSpec spec = spec_for(i);
    EXPECT_EQ(g.tokens, alone(spec)) << "request " << i;
    EXPECT_EQ(g.finish, Finish::kLength) << "request " << i;
    EXPECT_EQ(g.finishes, 1) << "request " << i << ": exactly one finish report";
    EXPECT_EQ(g.usage.prompt_tokens, static_cast<int64_t>(spec.prompt.size()));
    EXPECT_EQ(g.usage.completion_tokens, spec.max_tokens);
  }
  EXPECT_EQ(engine.running(), 0);
  EXPECT_TRUE(generator.idle());
}

// Prefix reuse through the engine: the same request again finds all but its last prompt token
// in its freed slot; its usage says so (cached_tokens, on every event and in the final usage),
// the metric counts it, and its tokens are those of the request alone.
TEST_F(ServeSchedulerTest, ARepeatedPromptReportsItsCachedTokensAndGetsTheSameTokens) {
  generate::Generator generator(gpt_, 2);
  Engine engine(generator);
  Scheduler s(test::scheduler_options(2, 4));
  std::map<uint64_t, Received> got;
  const RequestSpec spec = spec_for(3);
  const uint64_t first = submit(s, spec, got);
  run_until_idle(s, engine);
  const uint64_t again = submit(s, spec, got);
  run_until_idle(s, engine);
  const int64_t n = static_cast<int64_t>(spec.prompt.size());
  EXPECT_EQ(got[first].usage.cached_tokens, 0);
  EXPECT_EQ(got[again].usage.cached_tokens, n - 1);
  for (const RequestEvent& e : got[again].events) EXPECT_EQ(e.usage.cached_tokens, n - 1);
  EXPECT_EQ(got[again].tokens, alone(spec));
  EXPECT_EQ(got[again].tokens, got[first].tokens);
  EXPECT_EQ(s.metrics().prefix_cache_hit_tokens, static_cast<uint64_t>(n - 1));
}

TEST_F(ServeSchedulerTest, QueueBoundTurnsAwayTheRequestBeyondIt) {
  generate::Generator generator(gpt_, 1);
  Engine engine(generator);
  Scheduler s(test::scheduler_options(1, 2));
  std::map<uint64_t, Received> got;
  // One slot and a queue of two: the first request is bound for the free slot and does not
  // count; the next two queue; the fourth is turned away.
  submit(s, spec_for(0), got);
  EXPECT_EQ(s.load().queued, 0);
  submit(s, spec_for(1), got);
  submit(s, spec_for(2), got);
  EXPECT_EQ(s.load().queued, 2);
  SubmitResult fourth = s.submit(spec_for(3), nullptr);
  EXPECT_EQ(fourth.rejection, Rejection::kQueueFull);
  EXPECT_NE(fourth.message.find("queue is full"), std::string::npos) << fourth.message;
  EXPECT_NE(fourth.message.find("--max-queue 2"), std::string::npos) << fourth.message;
  // One is admitted into the slot: two still wait with no slot free, so the bound still holds.
  s.run_iteration(engine);
  EXPECT_EQ(s.metrics().waiting, 2);
  EXPECT_EQ(s.metrics().running, 1);
  EXPECT_EQ(s.submit(spec_for(3), nullptr).rejection, Rejection::kQueueFull);
  EXPECT_EQ(s.metrics().rejected_queue_full, 2u);
  run_until_idle(s, engine);
  EXPECT_EQ(got.size(), 3u);
  for (auto& [id, g] : got) EXPECT_EQ(g.finish, Finish::kLength) << "request " << id;
}

TEST_F(ServeSchedulerTest, CancelledWaitingRequestNeverRuns) {
  generate::Generator generator(gpt_, 1);
  Engine engine(generator);
  Scheduler s(test::scheduler_options(1, 4));
  std::map<uint64_t, Received> got;
  const uint64_t a = submit(s, spec_for(0, 8), got);
  const uint64_t b = submit(s, spec_for(1, 8), got);
  s.run_iteration(engine);  // a runs, b waits
  s.cancel(b);
  run_until_idle(s, engine);
  EXPECT_EQ(got[b].finish, Finish::kCancelled);
  EXPECT_TRUE(got[b].tokens.empty());
  EXPECT_EQ(got[b].usage.completion_tokens, 0);
  EXPECT_EQ(got[a].tokens, alone(spec_for(0, 8)));
  EXPECT_EQ(s.metrics().finished_cancelled, 1u);
  EXPECT_EQ(s.metrics().prompt_tokens, spec_for(0, 8).prompt.size()) << "b was never admitted";
}

TEST_F(ServeSchedulerTest, CancelledRunningRequestLeavesTheBatchAndFreesItsSlot) {
  generate::Generator generator(gpt_, 1);
  Engine engine(generator);
  Scheduler s(test::scheduler_options(1, 4));
  std::map<uint64_t, Received> got;
  const uint64_t a = submit(s, spec_for(0, 30), got);
  const uint64_t b = submit(s, spec_for(1, 8), got);
  for (int i = 0; i < 4; ++i) s.run_iteration(engine);
  ASSERT_FALSE(got[a].tokens.empty());
  const size_t before = got[a].tokens.size();
  s.cancel(a);
  s.run_iteration(engine);  // a leaves the Generator, b takes its slot in the same iteration
  EXPECT_EQ(got[a].finish, Finish::kCancelled);
  EXPECT_EQ(got[a].tokens.size(), before) << "no token after the cancellation";
  EXPECT_EQ(got[a].usage.completion_tokens, static_cast<int64_t>(before));
  EXPECT_EQ(engine.running(), 1);
  run_until_idle(s, engine);
  EXPECT_EQ(got[b].tokens, alone(spec_for(1, 8)));
  EXPECT_EQ(got[b].finish, Finish::kLength);
  // The cancelled prefix equals the start of a's text alone.
  const std::vector<int32_t> a_alone = alone(spec_for(0, 30));
  EXPECT_TRUE(std::equal(got[a].tokens.begin(), got[a].tokens.end(), a_alone.begin()));
  // Cancelling a finished or unknown request does nothing.
  s.cancel(a);
  s.cancel(12345);
  EXPECT_FALSE(s.run_iteration(engine));
  EXPECT_EQ(got[a].finishes, 1);
}

TEST_F(ServeSchedulerTest, FinishReasonsStopLengthAndContextFull) {
  // The greedy first token of a prompt, used as end-of-text: the request stops at once.
  RequestSpec greedy = spec_for(0, 5);
  const int32_t first = alone(greedy).front();
  SchedulerOptions o = test::scheduler_options(2, 4);
  o.eot_token = first;
  generate::Generator generator(gpt_, 2);
  Engine engine(generator);
  Scheduler s(o);
  std::map<uint64_t, Received> got;
  RequestSpec stops = greedy;
  stops.stop_at_eot = true;
  const uint64_t stop_id = submit(s, stops, got);
  const uint64_t length_id = submit(s, greedy, got);  // stop_at_eot false: runs to max_tokens
  RequestSpec full = spec_for(2, 30);                 // 40 + 30 > 48: fills the context
  full.prompt = small_prompt(40, 7);
  const uint64_t full_id = submit(s, full, got);
  run_until_idle(s, engine);
  EXPECT_EQ(got[stop_id].finish, Finish::kStop);
  EXPECT_TRUE(got[stop_id].tokens.empty()) << "end-of-text is not emitted";
  EXPECT_EQ(got[stop_id].usage.completion_tokens, 0);
  EXPECT_EQ(got[length_id].finish, Finish::kLength);
  EXPECT_EQ(got[length_id].tokens.size(), 5u);
  EXPECT_EQ(got[full_id].finish, Finish::kContextFull);
  EXPECT_EQ(got[full_id].usage.completion_tokens, kSmallContext - 40);
  EXPECT_EQ(got[full_id].tokens, alone(full));
  const Metrics m = s.metrics();
  EXPECT_EQ(m.finished_stop, 1u);
  EXPECT_EQ(m.finished_length, 2u) << "length counts max_tokens and a full context";
  EXPECT_STREQ(finish_name(Finish::kContextFull), "context_full");
}

TEST_F(ServeSchedulerTest, InvalidRequestsNameTheFieldAndTheLimit) {
  Scheduler s(test::scheduler_options(1, 4));
  struct Case {
    const char* what;
    RequestSpec spec;
    const char* param;
    const char* says;
  };
  std::vector<Case> cases;
  RequestSpec ok = spec_for(0);
  RequestSpec r = ok;
  r.prompt.clear();
  cases.push_back({"empty prompt", r, "prompt", "empty"});
  r = ok;
  r.prompt = small_prompt(48, 1);
  cases.push_back({"prompt fills the context", r, "prompt", "context is 48"});
  r = ok;
  r.prompt[1] = 90;
  cases.push_back({"id past the vocabulary", r, "prompt", "outside the vocabulary [0, 90)"});
  r = ok;
  r.prompt[0] = -3;
  cases.push_back({"negative id", r, "prompt", "id -3"});
  r = ok;
  r.max_tokens = 0;
  cases.push_back({"max_tokens 0", r, "max_tokens", "max_tokens 0 is out of range"});
  r = ok;
  r.sampling.temperature = -0.5f;
  cases.push_back({"negative temperature", r, "temperature", "temperature -0.5 is out of range"});
  r = ok;
  r.sampling.top_p = 0.0f;
  cases.push_back({"top_p 0", r, "top_p", "0 < top_p <= 1"});
  r = ok;
  r.sampling.top_p = 1.5f;
  cases.push_back({"top_p 1.5", r, "top_p", "top_p 1.5 is out of range"});
  r = ok;
  r.sampling.top_k = -1;
  cases.push_back({"top_k -1", r, "top_k", "top_k -1 is out of range"});
  for (const Case& c : cases) {
    SubmitResult res = s.submit(c.spec, nullptr);
    EXPECT_EQ(res.rejection, Rejection::kInvalid) << c.what;
    EXPECT_EQ(res.param, c.param) << c.what;
    EXPECT_NE(res.message.find(c.says), std::string::npos) << c.what << ": " << res.message;
  }
  EXPECT_EQ(s.metrics().rejected_invalid, cases.size());
  EXPECT_TRUE(s.idle()) << "nothing invalid was queued";
}

TEST_F(ServeSchedulerTest, MetricsCountTokensLatencyAndGauges) {
  double now = 100.0;
  generate::Generator generator(gpt_, 2);
  Engine engine(generator);
  Scheduler s(test::scheduler_options(2, 8), [&now] { return now; });
  std::map<uint64_t, Received> got;
  uint64_t prompt_tokens = 0, generated = 0;
  for (int i = 0; i < 4; ++i) {
    const RequestSpec spec = spec_for(i, 5);
    submit(s, spec, got);
    prompt_tokens += spec.prompt.size();
    generated += 5;
  }
  EXPECT_EQ(s.metrics().waiting, 4);
  EXPECT_EQ(s.metrics().running, 0);
  now += 0.01;
  s.run_iteration(engine);
  EXPECT_EQ(s.metrics().waiting, 2);
  EXPECT_EQ(s.metrics().running, 2);
  run_until_idle(s, engine, &now);
  const Metrics m = s.metrics();
  EXPECT_EQ(m.running, 0);
  EXPECT_EQ(m.waiting, 0);
  EXPECT_EQ(m.prompt_tokens, prompt_tokens);
  EXPECT_EQ(m.generation_tokens, generated);
  EXPECT_EQ(m.finished_length, 4u);
  EXPECT_EQ(m.time_to_first_token.count(), 4u);
  EXPECT_EQ(m.e2e_latency.count(), 4u);
  // Every step advanced the clock 10 ms: the first token comes after >= 1 step, the end after
  // >= 5 steps; the waiting pair started later than the first pair.
  EXPECT_GE(m.time_to_first_token.sum(), 4 * 0.01 - 1e-9);
  EXPECT_GE(m.e2e_latency.sum(), 4 * 0.05 - 1e-9);
  EXPECT_GT(m.e2e_latency.sum(), m.time_to_first_token.sum());
  EXPECT_EQ(m.e2e_latency.cumulative(Histogram::kBounds.size() - 1), 4u);
}

TEST_F(ServeSchedulerTest, DrainRefusesNewRequestsAndFinishesTheRest) {
  generate::Generator generator(gpt_, 1);
  Engine engine(generator);
  Scheduler s(test::scheduler_options(1, 4));
  std::map<uint64_t, Received> got;
  const uint64_t a = submit(s, spec_for(0, 4), got);
  const uint64_t b = submit(s, spec_for(1, 4), got);
  s.run_iteration(engine);
  s.drain();
  EXPECT_TRUE(s.draining());
  SubmitResult late = s.submit(spec_for(2, 4), nullptr);
  EXPECT_EQ(late.rejection, Rejection::kUnavailable);
  EXPECT_NE(late.message.find("shutting down"), std::string::npos);
  EXPECT_TRUE(s.wait_for_work(0.0)) << "draining wakes the loop";
  run_until_idle(s, engine);
  EXPECT_EQ(got[a].finish, Finish::kLength);
  EXPECT_EQ(got[b].finish, Finish::kLength) << "a queued request still finishes while draining";
  EXPECT_EQ(s.metrics().rejected_unavailable, 1u);
}

TEST_F(ServeSchedulerTest, WaitForWorkTimesOutWhenIdleAndWakesOnSubmit) {
  Scheduler s(test::scheduler_options(1, 4));
  EXPECT_FALSE(s.wait_for_work(0.01));
  std::map<uint64_t, Received> got;
  submit(s, spec_for(0), got);
  EXPECT_TRUE(s.wait_for_work(0.01));
}

TEST_F(ServeSchedulerTest, FollowerEngineFedTheWireMessagesMirrorsTheLeader) {
  // Two copies of one model, as two tp = 1 "ranks": the leader plans, both apply the same
  // changes (the follower's through encode/decode) and step; their events must agree exactly.
  models::Gpt follower_gpt(testing::small_generation_model(), 1, kSmallContext);
  follower_gpt.init_weights(11);
  generate::Generator leader_gen(gpt_, 3), follower_gen(follower_gpt, 3);
  Engine leader(leader_gen), follower(follower_gen);
  Scheduler s(test::scheduler_options(3, 16));
  std::map<uint64_t, Received> got;
  std::vector<uint64_t> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(submit(s, spec_for(i), got));
  int iteration = 0;
  while (!s.idle() && iteration < 1000) {
    if (iteration == 3) s.cancel(ids[1]);
    IterationChanges changes = s.plan();
    const std::vector<uint8_t> wire = encode_changes(changes);
    auto received = decode_changes(wire.data(), wire.size());
    ASSERT_TRUE(received.is_ok()) << received.status().message();
    ASSERT_TRUE(leader.apply(changes).empty());
    ASSERT_TRUE(follower.apply(*received).empty());
    const std::vector<SequenceEvent> a = leader.step(), b = follower.step();
    ASSERT_EQ(a.size(), b.size()) << "iteration " << iteration;
    for (size_t k = 0; k < a.size(); ++k) {
      EXPECT_EQ(a[k].request_id, b[k].request_id);
      EXPECT_EQ(a[k].token, b[k].token);
      EXPECT_EQ(a[k].finished, b[k].finished);
    }
    s.on_events(a);
    ++iteration;
  }
  EXPECT_TRUE(s.idle());
  EXPECT_EQ(follower.running(), 0);
  EXPECT_EQ(got[ids[1]].finish, Finish::kCancelled);
  EXPECT_EQ(got[ids[5]].tokens, alone(spec_for(5)));
}

TEST(ServeProtocol, ChangesRoundTripAndDamageIsNamed) {
  IterationChanges c;
  c.cancel = {7, 9};
  Admission a;
  a.request_id = 42;
  a.prompt = {1, 2, 3, 89};
  a.options.max_tokens = 17;
  a.options.stop_at_eot = false;
  a.options.eot_token = 88;
  a.options.sampling.temperature = 0.75f;
  a.options.sampling.top_k = 5;
  a.options.sampling.top_p = 0.5f;
  a.options.sampling.seed = 0xFFFFFFFFFFFFFFFEull;
  c.admit.push_back(a);
  c.shutdown = true;
  const std::vector<uint8_t> wire = encode_changes(c);
  auto d = decode_changes(wire.data(), wire.size());
  ASSERT_TRUE(d.is_ok()) << d.status().message();
  EXPECT_EQ(d->cancel, c.cancel);
  EXPECT_TRUE(d->shutdown);
  ASSERT_EQ(d->admit.size(), 1u);
  const Admission& b = d->admit[0];
  EXPECT_EQ(b.request_id, 42u);
  EXPECT_EQ(b.prompt, a.prompt);
  EXPECT_EQ(b.options.max_tokens, 17);
  EXPECT_FALSE(b.options.stop_at_eot);
  EXPECT_EQ(b.options.eot_token, 88);
  EXPECT_EQ(b.options.sampling.temperature, 0.75f);
  EXPECT_EQ(b.options.sampling.top_k, 5);
  EXPECT_EQ(b.options.sampling.top_p, 0.5f);
  EXPECT_EQ(b.options.sampling.seed, 0xFFFFFFFFFFFFFFFEull);
  EXPECT_TRUE(b.options.use_kv_cache);

  IterationChanges empty;
  const std::vector<uint8_t> small = encode_changes(empty);
  auto e = decode_changes(small.data(), small.size());
  ASSERT_TRUE(e.is_ok());
  EXPECT_TRUE(e->empty());

  for (size_t cut : {size_t{0}, size_t{3}, size_t{6}, wire.size() - 1}) {
    auto bad = decode_changes(wire.data(), cut);
    ASSERT_FALSE(bad.is_ok()) << "cut at " << cut;
    EXPECT_NE(bad.status().message().find("tessera-serve binary"), std::string::npos);
  }
  std::vector<uint8_t> longer = wire;
  longer.push_back(0);
  auto trailing = decode_changes(longer.data(), longer.size());
  ASSERT_FALSE(trailing.is_ok());
  EXPECT_NE(trailing.status().message().find("1 bytes after its end"), std::string::npos);
  std::vector<uint8_t> magic = wire;
  magic[0] ^= 0xFF;
  auto bad_magic = decode_changes(magic.data(), magic.size());
  ASSERT_FALSE(bad_magic.is_ok());
  EXPECT_NE(bad_magic.status().message().find("TSV1"), std::string::npos);
}

// The fuzzer's seed message (tests/fuzz/corpus/serve_request/wire_admit.bin) is in the current
// wire format, so fuzzing starts from a message that decodes: this fails when the format changes
// and the seed was not rewritten with it.
TEST(ServeProtocol, FuzzSeedIsAValidMessage) {
  std::ifstream in(
      std::string(TESSERA_TEST_DATA_DIR) + "/../fuzz/corpus/serve_request/wire_admit.bin",
      std::ios::binary);
  ASSERT_TRUE(in) << "the seed file is missing";
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                   std::istreambuf_iterator<char>());
  auto c = decode_changes(bytes.data(), bytes.size());
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->cancel, (std::vector<uint64_t>{3, 9}));
  ASSERT_EQ(c->admit.size(), 2u);
  EXPECT_EQ(c->admit[0].request_id, 7u);
  EXPECT_EQ(c->admit[0].prompt, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(c->admit[0].options.logprobs, 2);
  EXPECT_EQ(c->admit[0].options.sampling.seed, 1337u);
  EXPECT_EQ(c->admit[1].request_id, 8u);
  EXPECT_TRUE(c->admit[1].prompt.empty());
  EXPECT_EQ(c->admit[1].options.logprobs, -1);
  EXPECT_EQ(encode_changes(*c), bytes);
}

TEST(ServeMetrics, HistogramBucketsAreCumulativeAndInclusive) {
  Histogram h;
  h.observe(0.005);  // on a bound: counted in that bucket (le = less or equal)
  h.observe(0.02);
  h.observe(1000.0);  // past every bound: only in +Inf (count)
  EXPECT_EQ(h.cumulative(0), 1u);
  EXPECT_EQ(h.cumulative(1), 1u);
  EXPECT_EQ(h.cumulative(2), 2u);
  EXPECT_EQ(h.cumulative(Histogram::kBounds.size() - 1), 2u);
  EXPECT_EQ(h.count(), 3u);
  EXPECT_DOUBLE_EQ(h.sum(), 1000.025);
}

TEST(ServeMetrics, PrometheusTextIsWellFormed) {
  Metrics m;
  m.running = 3;
  m.waiting = 2;
  m.prompt_tokens = 120;
  m.generation_tokens = 456;
  m.finished_cancelled = 1;
  m.rejected_queue_full = 4;
  m.time_to_first_token.observe(0.03);
  m.e2e_latency.observe(0.7);
  m.e2e_latency.observe(2.0);
  const std::string text = render_prometheus(m);
  const std::regex sample_line(R"(^[a-z0-9_]+(\{[a-z_]+="[^"]*"\})? [0-9.e+-]+$)");
  std::istringstream lines(text);
  std::string line;
  int samples = 0;
  while (std::getline(lines, line)) {
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) continue;
    EXPECT_TRUE(std::regex_match(line, sample_line)) << "not a sample line: " << line;
    ++samples;
  }
  EXPECT_GT(samples, 30);
  for (const char* want :
       {"tessera_requests_running 3\n", "tessera_requests_waiting 2\n",
        "tessera_prompt_tokens_total 120\n", "tessera_generation_tokens_total 456\n",
        "tessera_requests_finished_total{reason=\"cancelled\"} 1\n",
        "tessera_requests_rejected_total{reason=\"queue_full\"} 4\n",
        "# TYPE tessera_time_to_first_token_seconds histogram\n",
        "tessera_time_to_first_token_seconds_bucket{le=\"0.05\"} 1\n",
        "tessera_e2e_request_latency_seconds_bucket{le=\"1\"} 1\n",
        "tessera_e2e_request_latency_seconds_bucket{le=\"+Inf\"} 2\n",
        "tessera_e2e_request_latency_seconds_sum 2.7",
        "tessera_e2e_request_latency_seconds_count 2\n"}) {
    EXPECT_NE(text.find(want), std::string::npos) << "missing: " << want;
  }
}

}  // namespace
}  // namespace tessera::serve
