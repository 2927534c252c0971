// tessera-serve's request features without HTTP (docs/SERVING.md): log-probabilities (the model's
// log_softmax at the chosen token and the top N, computed in double; the same in any batch within
// 1e-5; on the wire to every tp rank), stop strings (CompletionText: the text ends before the first
// stop string, a tail that could begin one is held back, the streamed pieces join to the whole
// text, each logged token travels with the piece its first byte is in), the request fields that ask
// for them, Scheduler::stop, and noticing a client that hung up (a socket found by its endpoints).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "generate/generator.h"
#include "models/gpt.h"
#include "serve/engine.h"
#include "serve/openai_api.h"
#include "serve/peer_socket.h"
#include "serve/protocol.h"
#include "serve/scheduler.h"
#include "test_models.h"

namespace tessera::serve {
namespace {

using nlohmann::json;

// log_softmax(z)[t] in long double, the plain way.
double reference_logprob(const std::vector<float>& z, int t) {
  long double sum = 0;
  for (float v : z) sum += std::exp(static_cast<long double>(v));
  return static_cast<double>(static_cast<long double>(z[t]) - std::log(sum));
}

TEST(ServeLogprobs, ChosenAndTopTokensMatchLogSoftmax) {
  std::vector<float> z(300);
  for (size_t i = 0; i < z.size(); ++i) z[i] = std::sin(0.37f * static_cast<float>(i)) * 6.0f;
  z[17] = 9.5f;   // the largest
  z[200] = 8.0f;  // a tie for second: the lower id comes first
  z[40] = 8.0f;
  const generate::TokenLogprobs lp = generate::token_logprobs(z.data(), 300, 123, 5);
  EXPECT_NEAR(lp.logprob, reference_logprob(z, 123), 1e-6);
  ASSERT_EQ(lp.n_top, 5);
  EXPECT_EQ(lp.top_tokens[0], 17);
  EXPECT_EQ(lp.top_tokens[1], 40);
  EXPECT_EQ(lp.top_tokens[2], 200);
  for (int k = 0; k < 5; ++k) {
    EXPECT_NEAR(lp.top_logprobs[k], reference_logprob(z, lp.top_tokens[k]), 1e-6) << k;
    if (k > 0) {
      EXPECT_LE(lp.top_logprobs[k], lp.top_logprobs[k - 1]);
    }
  }
  // Everything outside the top 5 is below the 5th.
  for (int i = 0; i < 300; ++i) {
    bool in_top = false;
    for (int k = 0; k < 5; ++k) in_top |= lp.top_tokens[k] == i;
    if (!in_top) {
      EXPECT_LE(z[i], z[lp.top_tokens[4]]) << i;
    }
  }
  // Huge logits do not overflow; n_top 0 lists none; a vocabulary smaller than n_top.
  std::vector<float> big = {1000.0f, 999.0f, -1000.0f};
  const generate::TokenLogprobs b = generate::token_logprobs(big.data(), 3, 0, 5);
  EXPECT_NEAR(b.logprob, -std::log1p(std::exp(-1.0)), 1e-6);
  EXPECT_EQ(b.n_top, 3);
  EXPECT_EQ(generate::token_logprobs(big.data(), 3, 1, 0).n_top, 0);
}

using testing::kSmallContext;
using testing::kSmallVocab;
using testing::small_prompt;

class ServeFeaturesModelTest : public ::testing::Test {
 protected:
  ServeFeaturesModelTest() : gpt_(testing::small_generation_model(), 1, kSmallContext) {
    gpt_.init_weights(11);
  }
  models::Gpt gpt_;
};

// Each emitted token's log-probabilities, per sequence, from a Generator run of `options`.
std::map<int, std::vector<generate::StepEvent>> run(
    generate::Generator& g, const std::vector<std::vector<int32_t>>& ps,
    const std::vector<generate::GenerateOptions>& os, std::vector<int>* ids) {
  std::map<int, std::vector<generate::StepEvent>> out;
  ids->clear();
  for (size_t i = 0; i < ps.size(); ++i) ids->push_back(g.add(ps[i], os[i]).value());
  for (int guard = 0; !g.idle() && guard < 1000; ++guard) {
    for (const generate::StepEvent& e : g.step()) {
      if (e.token >= 0) out[e.id].push_back(e);
    }
  }
  return out;
}

TEST_F(ServeFeaturesModelTest, LogprobsAreTheSameAloneAndInABatchAndGreedyIsTheMax) {
  generate::GenerateOptions greedy;
  greedy.sampling.temperature = 0;
  greedy.max_tokens = 12;
  greedy.stop_at_eot = false;
  greedy.logprobs = 5;
  generate::GenerateOptions sampled = greedy;
  sampled.sampling.temperature = 0.9f;
  sampled.sampling.top_k = 20;
  sampled.sampling.seed = 5;
  sampled.logprobs = 0;
  generate::GenerateOptions none = sampled;
  none.logprobs = -1;

  std::vector<int> ids;
  generate::Generator alone(gpt_, 1);
  const auto a = run(alone, {small_prompt(5, 1)}, {greedy}, &ids);
  const std::vector<generate::StepEvent> greedy_alone = a.at(ids[0]);
  const auto s = run(alone, {small_prompt(9, 2)}, {sampled}, &ids);
  const std::vector<generate::StepEvent> sampled_alone = s.at(ids[0]);

  generate::Generator batch(gpt_, 4);
  const auto b =
      run(batch, {small_prompt(20, 3), small_prompt(5, 1), small_prompt(9, 2), small_prompt(3, 4)},
          {none, greedy, sampled, greedy}, &ids);
  ASSERT_EQ(b.at(ids[1]).size(), greedy_alone.size());
  ASSERT_EQ(b.at(ids[2]).size(), sampled_alone.size());
  for (const generate::StepEvent& e : b.at(ids[0])) EXPECT_FALSE(e.has_logprobs);
  for (size_t i = 0; i < greedy_alone.size(); ++i) {
    const generate::StepEvent &x = greedy_alone[i], &y = b.at(ids[1])[i];
    ASSERT_TRUE(x.has_logprobs && y.has_logprobs);
    EXPECT_EQ(x.token, y.token);
    // A row's logits in a batch are the bits it gets alone (the Generator freezes the weights:
    // every matmul row in one fixed order; batched_decode_test.cpp): so are the log-probabilities.
    EXPECT_EQ(x.logprobs.logprob, y.logprobs.logprob) << "token " << i;
    EXPECT_EQ(x.logprobs.top_tokens, y.logprobs.top_tokens);
    for (int k = 0; k < 5; ++k) {
      EXPECT_EQ(x.logprobs.top_logprobs[k], y.logprobs.top_logprobs[k]) << i << " " << k;
    }
    // Greedy picks the most likely token: its log-probability is the top one.
    EXPECT_EQ(x.logprobs.n_top, 5);
    EXPECT_EQ(x.logprobs.top_tokens[0], x.token);
    EXPECT_EQ(x.logprobs.top_logprobs[0], x.logprobs.logprob);
    double mass = 0;
    for (int k = 0; k < 5; ++k) mass += std::exp(static_cast<double>(x.logprobs.top_logprobs[k]));
    EXPECT_LE(mass, 1.0 + 1e-6);
    EXPECT_LT(x.logprobs.logprob, 0.0f);
  }
  for (size_t i = 0; i < sampled_alone.size(); ++i) {
    const generate::StepEvent &x = sampled_alone[i], &y = b.at(ids[2])[i];
    EXPECT_EQ(x.token, y.token);
    EXPECT_NEAR(x.logprobs.logprob, y.logprobs.logprob, 1e-5) << "token " << i;
    EXPECT_EQ(x.logprobs.n_top, 0);
    EXPECT_LE(x.logprobs.logprob, 0.0f);
  }
}

TEST_F(ServeFeaturesModelTest, LogprobsOptionIsCheckedAndTravelsOnTheWire) {
  generate::GenerateOptions o;
  o.logprobs = 6;
  const core::Status st = generate::validate(o);
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("logprobs 6 is out of range"), std::string::npos) << st.message();
  o.logprobs = -2;
  EXPECT_FALSE(generate::validate(o).is_ok());
  o.logprobs = 5;
  EXPECT_TRUE(generate::validate(o).is_ok());

  IterationChanges c;
  Admission a;
  a.request_id = 3;
  a.prompt = {1, 2};
  a.options.logprobs = 4;
  c.admit.push_back(a);
  const std::vector<uint8_t> wire = encode_changes(c);
  auto d = decode_changes(wire.data(), wire.size());
  ASSERT_TRUE(d.is_ok()) << d.status().message();
  EXPECT_EQ(d->admit.at(0).options.logprobs, 4);
}

TEST_F(ServeFeaturesModelTest, StoppedRequestLeavesTheBatchCountedAsStopped) {
  SchedulerOptions so;
  so.max_running = 2;
  so.max_queue = 4;
  so.context = kSmallContext;
  so.vocab_size = kSmallVocab;
  Scheduler scheduler(so);
  generate::Generator g(gpt_, 2);
  Engine engine(g);
  RequestSpec spec;
  spec.prompt = small_prompt(4, 1);
  spec.max_tokens = 30;
  spec.stop_at_eot = false;
  spec.logprobs = 2;
  std::vector<RequestEvent> got;
  const SubmitResult r =
      scheduler.submit(spec, [&got](const RequestEvent& e) { got.push_back(e); });
  ASSERT_TRUE(r.ok());
  for (int i = 0; i < 3; ++i) scheduler.run_iteration(engine);
  ASSERT_EQ(got.size(), 3u);
  for (const RequestEvent& e : got) {
    EXPECT_TRUE(e.has_logprobs);
    EXPECT_EQ(e.logprobs.n_top, 2);
  }
  scheduler.stop(r.id);
  scheduler.stop(9999);  // not running: a no-op
  const IterationChanges changes = scheduler.plan();
  EXPECT_EQ(changes.cancel, std::vector<uint64_t>{r.id});
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got.back().finish, Finish::kStop);
  EXPECT_EQ(got.back().usage.completion_tokens, 3);
  (void)engine.apply(changes);
  EXPECT_EQ(engine.running(), 0);
  EXPECT_TRUE(scheduler.idle());
  const Metrics m = scheduler.metrics();
  EXPECT_EQ(m.finished_stop, 1u);
  EXPECT_EQ(m.finished_cancelled, 0u);
  EXPECT_EQ(m.running, 0);
}

// ---- CompletionText: stop strings and held-back text -------------------------------------------

// Pushes `tokens` (each logged), returns the pieces' texts joined by '|'.
std::string pieces(CompletionText& t, const std::vector<std::string>& tokens, bool finish = true) {
  std::string out;
  for (const std::string& tok : tokens) {
    if (t.stopped()) break;
    LoggedToken logged;
    logged.text = tok;
    out += t.push(tok, &logged).text + "|";
  }
  if (finish) out += t.finish().text;
  return out;
}

TEST(ServeCompletionText, WithoutStopStringsEveryWholeCharacterGoesAtOnce) {
  CompletionText t;
  EXPECT_EQ(pieces(t, {"ab", "c\xC3", "\xA9", " d"}), "ab|c|\xC3\xA9| d|");
  EXPECT_FALSE(t.stopped());
  EXPECT_EQ(t.tokens_pushed(), 4);
}

TEST(ServeCompletionText, TextEndsBeforeTheStopStringAcrossTokens) {
  CompletionText t({"END"});
  // "E" and "N" could begin "END": held until "D" decides it.
  EXPECT_EQ(pieces(t, {"abc", " E", "N", "D", "more"}), "abc| |||");
  EXPECT_TRUE(t.stopped());
  EXPECT_EQ(t.tokens_pushed(), 4) << "the token that completed the stop string counts";
  EXPECT_EQ(t.finish().text, "") << "nothing follows a stop";
}

TEST(ServeCompletionText, AHeldTailThatDoesNotBecomeAStopIsReleased) {
  CompletionText t({"END", "\n\n"});
  EXPECT_EQ(pieces(t, {"x E", "Nx", "\n", "y"}), "x |ENx||\ny|");
  EXPECT_FALSE(t.stopped());
  CompletionText u({"END"});
  EXPECT_EQ(pieces(u, {"EN"}), "|EN") << "the finish releases what was held";
}

TEST(ServeCompletionText, EarliestOfSeveralStopStringsWinsEvenInsideOneToken) {
  CompletionText t({"cd", "b"});
  EXPECT_EQ(pieces(t, {"abcd"}), "a|");
  CompletionText u({"xyz"});
  EXPECT_EQ(pieces(u, {"xyz tail"}), "|") << "a stop at the very start leaves no text";
  CompletionText w({"ab", "abc"});
  EXPECT_EQ(pieces(w, {"a", "bc"}), "||");
}

TEST(ServeCompletionText, StreamedPiecesJoinToTheWholeText) {
  const std::vector<std::string> tokens = {"The", " qu", "ick", " bro", "wn\n", "\n", "fox", "."};
  for (const std::vector<std::string>& stop :
       {std::vector<std::string>{}, {"\n\n"}, {"own"}, {"k b", "fox"}, {"zzz"}, {"."}}) {
    std::string whole;
    for (const std::string& s : tokens) whole += s;
    size_t cut = std::string::npos;
    for (const std::string& s : stop) cut = std::min(cut, whole.find(s));
    const std::string expected = whole.substr(0, cut);
    CompletionText t(stop);
    std::string joined;
    for (const std::string& s : tokens) {
      if (t.stopped()) break;
      const CompletionText::Piece p = t.push(s, nullptr);
      for (const std::string& st : stop) {
        EXPECT_EQ(p.text.find(st), std::string::npos) << "a piece holds a stop string";
      }
      joined += p.text;
    }
    joined += t.finish().text;
    EXPECT_EQ(joined, expected) << "stop " << (stop.empty() ? "none" : stop[0]);
    EXPECT_EQ(t.stopped(), cut != std::string::npos);
  }
}

TEST(ServeCompletionText, LoggedTokensTravelWithThePieceTheirFirstByteIsIn) {
  CompletionText t({"STOP"});
  std::vector<LoggedToken> seen;
  std::vector<std::string> texts;
  for (const char* s : {"ab", "S", "T", "x", "cS", "TOP", "zz"}) {
    if (t.stopped()) break;
    LoggedToken logged;
    logged.text = s;
    CompletionText::Piece p = t.push(s, &logged);
    texts.push_back(p.text);
    for (LoggedToken& l : p.tokens) seen.push_back(l);
  }
  // "S", "T" are held (they could begin STOP) until "x" shows they do not.
  EXPECT_EQ(texts, (std::vector<std::string>{"ab", "", "", "STx", "c", ""}));
  ASSERT_EQ(seen.size(), 5u) << "\"TOP\" begins inside the stop string: not listed";
  const std::vector<int64_t> offsets = {0, 2, 3, 4, 5};
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i].text_offset, offsets[i]) << i;
  EXPECT_EQ(seen[4].text, "cS") << "a token that straddles the stop string is listed whole";
}

// ---- Request fields -----------------------------------------------------------------------------

class ServeFeaturesApiTest : public ::testing::Test {
 protected:
  ServeFeaturesApiTest()
      : tokenizer_(std::move(
            data::Tokenizer::load(std::string(TESSERA_TEST_DATA_DIR) + "/tiny_gpt2_vocab.json",
                                  std::string(TESSERA_TEST_DATA_DIR) + "/tiny_gpt2_merges.txt")
                .value())) {
    limits_.model_name = "tiny";
    limits_.context = 32;
    limits_.vocab_size = tokenizer_.vocab_size();
  }
  std::optional<ApiError> parse(const std::string& body, CompletionRequest* out) {
    return parse_completion_request(body, limits_, tokenizer_, 77, out);
  }
  void expect_error(const std::string& body, const std::string& param, const std::string& says) {
    CompletionRequest r;
    auto e = parse(body, &r);
    ASSERT_TRUE(e.has_value()) << "accepted: " << body;
    EXPECT_EQ(e->status, 400) << body;
    EXPECT_EQ(e->param, param) << body;
    EXPECT_NE(e->message.find(says), std::string::npos) << body << ": " << e->message;
  }
  data::Tokenizer tokenizer_;
  ApiLimits limits_;
};

TEST_F(ServeFeaturesApiTest, StopAndLogprobsParse) {
  CompletionRequest r;
  ASSERT_FALSE(parse(R"({"prompt": "a"})", &r));
  EXPECT_TRUE(r.stop.empty());
  EXPECT_EQ(r.spec.logprobs, -1);
  ASSERT_FALSE(parse(R"({"prompt": "a", "stop": "\n", "logprobs": 0})", &r));
  EXPECT_EQ(r.stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(r.spec.logprobs, 0);
  ASSERT_FALSE(parse(R"({"prompt": "a", "stop": ["x", "yz", "é", "w"], "logprobs": 5})", &r));
  EXPECT_EQ(r.stop, (std::vector<std::string>{"x", "yz", "é", "w"}));
  EXPECT_EQ(r.spec.logprobs, 5);
  for (const char* none : {R"("")", "[]", "null"}) {
    ASSERT_FALSE(
        parse(std::string(R"({"prompt": "a", "logprobs": null, "stop": )") + none + "}", &r));
    EXPECT_TRUE(r.stop.empty()) << none;
    EXPECT_EQ(r.spec.logprobs, -1);
  }
}

TEST_F(ServeFeaturesApiTest, BadStopAndLogprobsNameTheFieldAndTheLimit) {
  expect_error(R"({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]})", "stop", "at most 4");
  expect_error(R"({"prompt": "a", "stop": ["a", ""]})", "stop", "stop string 1 is empty");
  expect_error(R"({"prompt": "a", "stop": ["a", 3]})", "stop", "stop string 1 is an integer");
  expect_error(R"({"prompt": "a", "stop": 3})", "stop", "a string or a list of strings");
  expect_error(R"({"prompt": "a", "stop": ")" + std::string(300, 'x') + R"("})", "stop",
               "300 bytes; the limit is 256");
  expect_error(R"({"prompt": "a", "logprobs": 6})", "logprobs", "it must lie in [0, 5]");
  expect_error(R"({"prompt": "a", "logprobs": -1})", "logprobs", "it must lie in [0, 5]");
  expect_error(R"({"prompt": "a", "logprobs": true})", "logprobs", "not a boolean");
  expect_error(R"({"prompt": "a", "logprobs": 1.5})", "logprobs", "not a number");
}

TEST(ServeLogprobsJson, CompletionsFormat) {
  LogprobsField none;
  EXPECT_TRUE(json::parse(completion_body("c", 1, "m", "ab", Finish::kStop, {1, 2},
                                          none))["choices"][0]["logprobs"]
                  .is_null());
  LogprobsField f;
  f.requested = 2;
  f.tokens.push_back({"a", -0.5f, {{"a", -0.5f}, {"b", -1.5f}}, 0});
  f.tokens.push_back({"b", -2.0f, {{"x", -0.25f}, {"x", -0.75f}}, 1});
  const json j =
      json::parse(completion_body("c", 1, "m", "ab", Finish::kLength, {1, 2}, f))["choices"][0];
  EXPECT_EQ(j["logprobs"]["tokens"], json::array({"a", "b"}));
  EXPECT_EQ(j["logprobs"]["token_logprobs"], json::array({-0.5, -2.0}));
  EXPECT_EQ(j["logprobs"]["text_offset"], json::array({0, 1}));
  EXPECT_EQ(j["logprobs"]["top_logprobs"][0], (json{{"a", -0.5}, {"b", -1.5}}));
  EXPECT_EQ(j["logprobs"]["top_logprobs"][1], (json{{"x", -0.25}})) << "the likelier of a pair";
  f.requested = 0;
  const json chunk =
      json::parse(completion_chunk_event("c", 1, "m", "ab", Finish::kNone, f).substr(6));
  EXPECT_TRUE(chunk["choices"][0]["logprobs"]["top_logprobs"].is_null());
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["tokens"].size(), 2u);
}

// ---- A client that hung up ----------------------------------------------------------------------

TEST(ServePeerSocket, FindsTheConnectionByItsEndpointsAndSeesTheHangUp) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  socklen_t length = sizeof address;
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const int client = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  const int server = accept(listener, nullptr, nullptr);
  ASSERT_GE(server, 0);
  sockaddr_in client_address{};
  length = sizeof client_address;
  ASSERT_EQ(getsockname(client, reinterpret_cast<sockaddr*>(&client_address), &length), 0);
  const int server_port = ntohs(address.sin_port), client_port = ntohs(client_address.sin_port);

  // The server's side of the connection: local = the listening port, remote = the client's.
  EXPECT_EQ(find_connected_socket("127.0.0.1", server_port, "127.0.0.1", client_port), server);
  EXPECT_EQ(find_connected_socket("127.0.0.1", client_port, "127.0.0.1", server_port), client);
  EXPECT_EQ(find_connected_socket("127.0.0.1", server_port, "127.0.0.1", 1), -1);
  EXPECT_FALSE(peer_hung_up(server));
  ASSERT_EQ(write(client, "GET", 3), 3);
  EXPECT_FALSE(peer_hung_up(server)) << "bytes waiting: the client is still there";
  char buf[3];
  ASSERT_EQ(read(server, buf, 3), 3) << "peeking consumed nothing";
  close(client);
  EXPECT_TRUE(peer_hung_up(server));
  close(server);
  close(listener);
}

}  // namespace
}  // namespace tessera::serve
