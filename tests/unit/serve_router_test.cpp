// Serving over dp replicas without HTTP or MPI (src/serve/router.h): a Router over a local
// replica and remote replicas simulated in process (each its own Generator, Engine, Scheduler and
// ReplicaAgent over the same weights), every message between them passed through its wire
// encoding. Checks: least-loaded routing with ties to the lowest replica and the queue bound over
// all replicas; a request's tokens are the ones it gets alone, whichever replica ran it;
// cancellations and stops reach a remote replica; the drain, bye and fin handshake; metrics summed
// over replicas; the route messages round-trip and name damage. And the scheduler's KV-cache
// budget: admission by footprint, first come first served, the whole-budget limit.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "generate/generator.h"
#include "models/gpt.h"
#include "serve/engine.h"
#include "serve/route_protocol.h"
#include "serve/router.h"
#include "serve/scheduler.h"
#include "serve_test_util.h"
#include "test_models.h"

namespace tessera::serve {
namespace {

using testing::kSmallContext;

RequestSpec replica_spec(int i, int max_tokens) {
  RequestSpec s;
  s.prompt = testing::small_prompt(3 + 4 * (i % 5), i);
  s.max_tokens = max_tokens;
  s.stop_at_eot = false;
  s.sampling.temperature = i % 2 == 0 ? 0.0f : 0.9f;
  s.sampling.top_k = i % 3 == 0 ? 0 : 20;
  s.sampling.seed = 2000 + i;
  return s;
}

using test::Received;
using test::record;

// A remote replica in process: what its leader rank holds.
struct Remote {
  Remote(models::Gpt& gpt, int slots, const SchedulerOptions& o)
      : generator(gpt, slots), engine(generator), scheduler(o), agent(scheduler) {}
  generate::Generator generator;
  Engine engine;
  Scheduler scheduler;
  ReplicaAgent agent;
  bool fin = false;
};

class ServeRouterTest : public ::testing::Test {
 protected:
  ServeRouterTest() : gpt_(testing::small_generation_model(), 1, kSmallContext) {
    gpt_.init_weights(11);
  }

  // dp replicas of `slots` slots each; replica 0 local.
  void build(int dp, int slots, int64_t max_queue) {
    local_generator_ = std::make_unique<generate::Generator>(gpt_, slots);
    local_engine_ = std::make_unique<Engine>(*local_generator_);
    local_ = std::make_unique<Scheduler>(test::scheduler_options(slots, max_queue));
    router_ = std::make_unique<Router>(*local_, dp);
    remotes_.clear();
    remotes_.push_back(nullptr);
    SchedulerOptions remote_options =
        test::scheduler_options(slots, 1 << 30);  // the Router applies max_queue
    for (int d = 1; d < dp; ++d) {
      remotes_.push_back(std::make_unique<Remote>(gpt_, slots, remote_options));
    }
  }

  // One round: the Router's messages out (through their bytes), one iteration of every replica,
  // the remote replicas' reports back (through their bytes).
  void round() {
    for (auto& [d, message] : router_->take_outgoing()) {
      const std::vector<uint8_t> bytes = encode_router_message(message);
      auto decoded = decode_router_message(bytes.data(), bytes.size());
      ASSERT_TRUE(decoded.is_ok()) << decoded.status().message();
      if (remotes_[d]->agent.on_message(*decoded)) remotes_[d]->fin = true;
    }
    local_->run_iteration(*local_engine_);
    for (size_t d = 1; d < remotes_.size(); ++d) {
      Remote& r = *remotes_[d];
      if (r.fin) continue;
      r.scheduler.run_iteration(r.engine);
      auto report = r.agent.take_report();
      if (!report) continue;
      const std::vector<uint8_t> bytes = encode_report(*report);
      auto decoded = decode_report(bytes.data(), bytes.size());
      ASSERT_TRUE(decoded.is_ok()) << decoded.status().message();
      router_->on_report(static_cast<int>(d), *decoded);
    }
  }

  void run_until(const std::map<uint64_t, Received>& got, size_t n_finished) {
    for (int i = 0; i < 5000; ++i) {
      size_t done = 0;
      for (const auto& [id, g] : got) done += g.finishes > 0;
      if (done >= n_finished) return;
      round();
    }
    FAIL() << "requests did not finish in 5000 rounds";
  }

  std::vector<int32_t> alone(const RequestSpec& spec) {
    generate::Generator g(gpt_, 1);
    generate::GenerateOptions o;
    o.sampling = spec.sampling;
    o.max_tokens = spec.max_tokens;
    o.stop_at_eot = spec.stop_at_eot;
    auto out = g.generate(spec.prompt, o, nullptr);
    EXPECT_TRUE(out.is_ok()) << out.status().message();
    return out.is_ok() ? *out : std::vector<int32_t>{};
  }

  models::Gpt gpt_;
  std::unique_ptr<generate::Generator> local_generator_;
  std::unique_ptr<Engine> local_engine_;
  std::unique_ptr<Scheduler> local_;
  std::unique_ptr<Router> router_;
  std::vector<std::unique_ptr<Remote>> remotes_;
};

TEST_F(ServeRouterTest, LeastLoadedReplicaTiesToTheLowestAndTheQueueBoundSpansReplicas) {
  build(3, 1, 1);
  std::map<uint64_t, Received> got;
  // Nothing runs yet: each submit adds one waiting request to the least loaded replica (ties to
  // the lowest). The first three go to the replicas' free slots, so they do not count against
  // max_queue; the next three queue one behind each slot.
  std::vector<int> replicas;
  for (int i = 0; i < 6; ++i) {
    SubmitResult r = router_->submit(replica_spec(i, 6), record(got));
    ASSERT_TRUE(r.ok()) << "request " << i << ": " << r.message;
    replicas.push_back(r.replica);
  }
  EXPECT_EQ(replicas, (std::vector<int>{0, 1, 2, 0, 1, 2})) << "ties go to the lowest replica";
  // Every replica has max_queue (1) queued beyond its slot: the next one is turned away, naming
  // the bound.
  SubmitResult full = router_->submit(replica_spec(6, 6), record(got));
  EXPECT_EQ(full.rejection, Rejection::kQueueFull);
  EXPECT_NE(full.message.find("all 3 replicas are full (--max-queue 1 each)"), std::string::npos)
      << full.message;
  // One round admits one request per replica into its slot: each still has one waiting and no
  // free slot, so the bound still holds.
  round();
  EXPECT_EQ(router_->submit(replica_spec(7, 6), record(got)).rejection, Rejection::kQueueFull);
  run_until(got, 6);
  const Metrics total = router_->metrics();
  EXPECT_EQ(total.rejected_queue_full, 2u);
  EXPECT_EQ(total.finished_length, 6u);
  const std::vector<Metrics> per = router_->replica_metrics();
  ASSERT_EQ(per.size(), 3u);
  EXPECT_EQ(per[0].finished_length, 2u);
  EXPECT_EQ(per[1].finished_length, 2u);
  EXPECT_EQ(per[2].finished_length, 2u);
  const std::string text = router_->render_metrics();
  EXPECT_NE(text.find("tessera_replica_requests_routed_total{replica=\"1\"} 2\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("tessera_requests_finished_total{reason=\"length\"} 6\n"), std::string::npos)
      << text;
}

TEST_F(ServeRouterTest, ARequestGetsItsAloneTokensOnWhicheverReplicaRunsIt) {
  // 12 requests over 2 replicas of 2 slots each; each request's tokens equal its tokens alone.
  build(2, 2, 16);
  std::map<uint64_t, Received> got;
  std::map<uint64_t, int> spec_of;
  std::map<int, int> per_replica;
  for (int i = 0; i < 12; ++i) {
    SubmitResult r = router_->submit(replica_spec(i, 5 + i), record(got));
    ASSERT_TRUE(r.ok()) << r.message;
    spec_of[r.id] = i;
    ++per_replica[r.replica];
    if (i % 3 == 2) round();  // some join running batches
  }
  EXPECT_GE(per_replica[0], 4);
  EXPECT_GE(per_replica[1], 4);
  run_until(got, 12);
  for (const auto& [id, i] : spec_of) {
    EXPECT_EQ(got[id].tokens, alone(replica_spec(i, 5 + i))) << "request " << i;
    EXPECT_EQ(got[id].finishes, 1) << "request " << i;
    EXPECT_EQ(got[id].usage.completion_tokens, 5 + i) << "request " << i;
  }
  // The same seeded request on replica 0 and on replica 1 (both idle: ties go to 0, then the
  // load sends the second to 1) gives the same tokens.
  std::map<uint64_t, Received> twice;
  SubmitResult a = router_->submit(replica_spec(1, 20), record(twice));
  SubmitResult b = router_->submit(replica_spec(1, 20), record(twice));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a.replica, 0);
  EXPECT_EQ(b.replica, 1);
  run_until(twice, 2);
  EXPECT_EQ(twice[a.id].tokens, twice[b.id].tokens);
  EXPECT_EQ(twice[a.id].tokens.size(), 20u);
}

TEST_F(ServeRouterTest, CancelAndStopReachARemoteReplicaAndFreeItsSlot) {
  build(2, 1, 4);
  std::map<uint64_t, Received> got;
  SubmitResult a = router_->submit(replica_spec(0, 30), record(got));  // replica 0
  SubmitResult b = router_->submit(replica_spec(1, 30), record(got));  // replica 1
  SubmitResult c = router_->submit(replica_spec(2, 30), record(got));  // replica 0's queue
  SubmitResult d = router_->submit(replica_spec(3, 30), record(got));  // replica 1's queue
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && d.ok());
  ASSERT_EQ(b.replica, 1);
  ASSERT_EQ(d.replica, 1);
  for (int i = 0; i < 4; ++i) round();
  ASSERT_FALSE(got[b.id].tokens.empty());
  EXPECT_EQ(router_->replica_metrics()[1].running, 1);
  EXPECT_EQ(router_->replica_metrics()[1].waiting, 1);
  router_->cancel(b.id);
  round();  // replica 1 removes b and admits d in the same iteration
  EXPECT_EQ(got[b.id].finish, Finish::kCancelled);
  const size_t b_tokens = got[b.id].tokens.size();
  round();
  ASSERT_FALSE(got[d.id].tokens.empty()) << "d took b's slot";
  router_->stop(d.id);
  round();
  EXPECT_EQ(got[d.id].finish, Finish::kStop) << "a stop is counted as stopped on the replica";
  run_until(got, 4);
  EXPECT_EQ(got[b.id].tokens.size(), b_tokens) << "no token after the cancellation";
  EXPECT_EQ(got[b.id].finishes, 1);
  const Metrics remote = router_->replica_metrics()[1];
  EXPECT_EQ(remote.finished_cancelled, 1u);
  EXPECT_EQ(remote.finished_stop, 1u);
  EXPECT_EQ(remote.running, 0);
  EXPECT_EQ(got[a.id].tokens, alone(replica_spec(0, 30)));
  EXPECT_EQ(got[c.id].tokens, alone(replica_spec(2, 30)));
}

TEST_F(ServeRouterTest, DrainFinishesEveryReplicaThenByeAndFin) {
  build(2, 1, 4);
  std::map<uint64_t, Received> got;
  SubmitResult a = router_->submit(replica_spec(0, 12), record(got));
  SubmitResult b = router_->submit(replica_spec(1, 12), record(got));
  SubmitResult c = router_->submit(replica_spec(2, 12), record(got));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  round();
  router_->drain();
  EXPECT_TRUE(router_->draining());
  SubmitResult late = router_->submit(replica_spec(3, 5), record(got));
  EXPECT_EQ(late.rejection, Rejection::kUnavailable);
  EXPECT_FALSE(router_->remotes_stopped());
  run_until(got, 3);
  for (uint64_t id : {a.id, b.id, c.id}) EXPECT_EQ(got[id].finish, Finish::kLength) << id;
  // The remote replica, drained and idle, says bye; the Router answers with fin, the last message.
  Remote& r = *remotes_[1];
  EXPECT_TRUE(r.scheduler.draining());
  EXPECT_TRUE(r.scheduler.idle());
  router_->on_report(1, r.agent.bye_report());
  EXPECT_FALSE(router_->remotes_stopped()) << "fin not sent yet";
  auto out = router_->take_outgoing();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first, 1);
  EXPECT_TRUE(r.agent.on_message(out[0].second)) << "the message after bye is fin";
  EXPECT_TRUE(router_->remotes_stopped());
  EXPECT_TRUE(router_->take_outgoing().empty()) << "nothing after fin";
  router_->cancel(b.id);  // finished: nothing to send
  EXPECT_TRUE(router_->take_outgoing().empty());
}

TEST(ServeRouteProtocol, MessagesRoundTripAndDamageIsNamed) {
  RouterMessage m;
  Admission a;
  a.request_id = 77;
  a.prompt = {1, 2, 3};
  a.options.max_tokens = 9;
  a.options.sampling.temperature = 0.5f;
  a.options.sampling.seed = 123456789012345ull;
  m.submit.push_back(a);
  m.cancel = {5, 6};
  m.stop = {8};
  m.drain = true;
  std::vector<uint8_t> bytes = encode_router_message(m);
  auto back = decode_router_message(bytes.data(), bytes.size());
  ASSERT_TRUE(back.is_ok()) << back.status().message();
  EXPECT_EQ(back->cancel, m.cancel);
  EXPECT_EQ(back->stop, m.stop);
  EXPECT_TRUE(back->drain);
  ASSERT_EQ(back->submit.size(), 1u);
  EXPECT_EQ(back->submit[0].request_id, 77u);
  EXPECT_EQ(back->submit[0].prompt, a.prompt);
  EXPECT_EQ(back->submit[0].options.max_tokens, 9);
  EXPECT_EQ(back->submit[0].options.sampling.seed, 123456789012345ull);
  auto bad = decode_router_message(bytes.data(), 10);  // inside the first stop id
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("stop list"), std::string::npos) << bad.status().message();

  ReplicaReport r;
  RequestEvent e;
  e.request_id = 3;
  e.token = 42;
  r.events.push_back(e);
  e.token = -1;
  e.finish = Finish::kError;
  e.usage = {4, 5, 3};
  e.error = "why";
  r.events.push_back(e);
  r.metrics.running = 2;
  r.metrics.generation_tokens = 99;
  r.metrics.time_to_first_token.observe(0.02);
  r.bye = true;
  bytes = encode_report(r);
  auto report = decode_report(bytes.data(), bytes.size());
  ASSERT_TRUE(report.is_ok()) << report.status().message();
  ASSERT_EQ(report->events.size(), 2u);
  EXPECT_EQ(report->events[0].token, 42);
  EXPECT_EQ(report->events[0].finish, Finish::kNone);
  EXPECT_EQ(report->events[1].finish, Finish::kError);
  EXPECT_EQ(report->events[1].usage.completion_tokens, 5);
  EXPECT_EQ(report->events[1].usage.cached_tokens, 3);
  EXPECT_EQ(report->events[1].error, "why");
  EXPECT_TRUE(report->bye);
  EXPECT_EQ(report->metrics.running, 2);
  EXPECT_EQ(report->metrics.generation_tokens, 99u);
  EXPECT_EQ(report->metrics.time_to_first_token.count(), 1u);
  bytes.push_back(0);
  auto trailing = decode_report(bytes.data(), bytes.size());
  ASSERT_FALSE(trailing.is_ok());
  EXPECT_NE(trailing.status().message().find("1 bytes after its end"), std::string::npos)
      << trailing.status().message();
  bytes[0] = 'X';
  EXPECT_NE(decode_report(bytes.data(), bytes.size()).status().message().find("TSR1"),
            std::string::npos);
}

// ---- The scheduler's KV-cache budget ------------------------------------------------------------

TEST_F(ServeRouterTest, KvBudgetAdmitsByFootprintFirstComeFirstServed) {
  // Budget 40 positions, 4 slots. a (3 + 25 = 28) runs; b (7 + 20 = 27) does not fit beside it
  // and waits although slots are free; c (3 + 5 = 8) would fit but waits behind b (no
  // overtaking); when a finishes, b and c run together (35 <= 40).
  generate::Generator generator(gpt_, 4);
  Engine engine(generator);
  SchedulerOptions o = test::scheduler_options(4, 8);
  o.kv_budget_tokens = 40;
  o.kv_bytes_per_token = 100;
  Scheduler s(o);
  std::map<uint64_t, Received> got;
  const RequestSpec sa = replica_spec(0, 25), sb = replica_spec(1, 20), sc = replica_spec(5, 5);
  ASSERT_EQ(kv_footprint(sa, o), 28);
  ASSERT_EQ(kv_footprint(sb, o), 27);
  ASSERT_EQ(kv_footprint(sc, o), 8);
  SchedulerOptions blocks = o;
  blocks.kv_block_size = 16;
  EXPECT_EQ(kv_footprint(sa, blocks), 32) << "whole blocks";
  EXPECT_EQ(kv_footprint(sc, blocks), 16);
  EXPECT_EQ(SchedulerOptions().kv_block_size, 1);
  const uint64_t a = s.submit(sa, record(got)).id;
  const uint64_t b = s.submit(sb, record(got)).id;
  const uint64_t c = s.submit(sc, record(got)).id;
  s.run_iteration(engine);
  Metrics m = s.metrics();
  EXPECT_EQ(m.running, 1);
  EXPECT_EQ(m.waiting, 2);
  EXPECT_EQ(m.kv_used_tokens, 28);
  EXPECT_EQ(m.kv_capacity_tokens, 40);
  EXPECT_EQ(m.kv_allocated_bytes, 40 * 100) << "the pool is the budget (paged), not 4 contexts";
  int iterations = 1;
  while (got[a].finishes == 0 && iterations < 1000) {
    s.run_iteration(engine);
    ++iterations;
    if (got[a].finishes == 0) {
      EXPECT_EQ(s.metrics().running, 1) << "b and c wait while a runs";
    }
  }
  s.run_iteration(engine);  // b and c are admitted
  m = s.metrics();
  EXPECT_EQ(m.running, 2);
  EXPECT_EQ(m.kv_used_tokens, 35);
  while (!s.idle() && iterations < 2000) {
    s.run_iteration(engine);
    ++iterations;
  }
  EXPECT_EQ(got[a].tokens, alone(sa));
  EXPECT_EQ(got[b].tokens, alone(sb));
  EXPECT_EQ(got[c].tokens, alone(sc));
  EXPECT_EQ(s.metrics().kv_used_tokens, 0) << "every reservation released";
}

TEST_F(ServeRouterTest, KvBudgetRefusesARequestThatCouldNeverFitAndFreesOnCancel) {
  generate::Generator generator(gpt_, 2);
  Engine engine(generator);
  SchedulerOptions o = test::scheduler_options(2, 8);
  o.kv_budget_tokens = 20;
  o.kv_bytes_per_token = 2048;
  o.kv_cache_mb = 20 * 2048 / 1048576.0;
  Scheduler s(o);
  SubmitResult r = s.submit(replica_spec(1, 14), nullptr);  // 7 + 14 = 21 > 20
  EXPECT_EQ(r.rejection, Rejection::kInvalid);
  EXPECT_EQ(r.param, "max_tokens");
  EXPECT_NE(r.message.find("needs 21 positions of KV cache, over the whole KV-cache budget of 20 "
                           "positions"),
            std::string::npos)
      << r.message;
  EXPECT_NE(r.message.find("ask for at most 13 tokens"), std::string::npos) << r.message;
  EXPECT_EQ(kv_budget_tokens(1.0, 2048), 512);
  // A cancelled running request gives its reservation back.
  std::map<uint64_t, Received> got;
  const uint64_t a = s.submit(replica_spec(1, 13), record(got)).id;  // 20: the whole budget
  const uint64_t b = s.submit(replica_spec(0, 4), record(got)).id;   // 7: waits
  s.run_iteration(engine);
  EXPECT_EQ(s.metrics().kv_used_tokens, 20);
  EXPECT_EQ(s.metrics().waiting, 1);
  s.cancel(a);
  s.run_iteration(engine);
  EXPECT_EQ(got[a].finish, Finish::kCancelled);
  EXPECT_EQ(s.metrics().kv_used_tokens, 7) << "b admitted into a's freed budget";
  while (!s.idle()) s.run_iteration(engine);
  EXPECT_EQ(got[b].tokens, alone(replica_spec(0, 4)));
}

}  // namespace
}  // namespace tessera::serve
