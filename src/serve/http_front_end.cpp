// HttpFrontEnd: cpp-httplib handlers over the Scheduler; see http_front_end.h.
#include "serve/http_front_end.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "data/tokenizer.h"
#include "serve/peer_socket.h"
#include "serve/playground.h"
#include "serve/router.h"

namespace tessera::serve {
namespace {

// One request's events, from the serving loop's callback to the handler thread waiting on them.
class RequestChannel {
 public:
  void push(const RequestEvent& e) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(e);
    }
    cv_.notify_one();
  }
  // False when nothing came within `timeout`.
  bool pop(RequestEvent* e, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [this] { return !events_.empty(); })) return false;
    *e = std::move(events_.front());
    events_.pop_front();
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RequestEvent> events_;
};

constexpr auto kPollInterval = std::chrono::milliseconds(100);

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  if (e.status == 429 || e.status == 503) res.set_header("Retry-After", "1");
  res.set_content(error_body(e), "application/json");
}

ApiError hung_up_error() {
  ApiError e;
  e.status = 499;  // nginx's "client closed request": no client reads it
  e.type = "client_closed_request";
  e.message = "the client closed the connection; the request was cancelled";
  return e;
}

ApiError stopped_error() {
  ApiError e;
  e.status = 503;
  e.type = "service_unavailable";
  e.message = "the server stopped before the request finished";
  return e;
}

}  // namespace

struct HttpFrontEnd::Impl {
  Impl(Router& r, const data::Tokenizer& t, ApiLimits l)
      : router(r), tokenizer(t), limits(std::move(l)) {}

  Router& router;
  const data::Tokenizer& tokenizer;
  const ApiLimits limits;
  httplib::Server server;
  std::thread listener;
  std::atomic<State> state{State::kLoading};
  std::atomic<bool> stopping{false};
  std::atomic<int> in_flight{0};  // completions whose response is not yet fully written
  std::mutex seed_mu;
  std::mt19937_64 seeds{std::random_device{}()};
  const int64_t created = static_cast<int64_t>(std::time(nullptr));

  uint64_t fresh_seed() {
    std::lock_guard<std::mutex> lock(seed_mu);
    return seeds();
  }

  // A token as the logprobs field lists it (its text and top alternatives decoded).
  LoggedToken log_token(const RequestEvent& e) const {
    LoggedToken t;
    t.text = tokenizer.decode_token(e.token);
    t.logprob = e.logprobs.logprob;
    for (int k = 0; k < e.logprobs.n_top; ++k) {
      t.top.emplace_back(tokenizer.decode_token(e.logprobs.top_tokens[k]),
                         e.logprobs.top_logprobs[k]);
    }
    return t;
  }
  void completions(const httplib::Request& req, httplib::Response& res, Endpoint endpoint);
  void install_routes();
};

void HttpFrontEnd::Impl::install_routes() {
  server.Get("/", [](const httplib::Request&, httplib::Response& res) {
    const std::string_view page = playground_html();
    res.set_content(page.data(), page.size(), "text/html; charset=utf-8");
  });
  server.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const State s = state.load();
    res.status = s == State::kReady ? 200 : 503;
    const char* status = s == State::kReady ? "ok" : s == State::kLoading ? "loading" : "draining";
    res.set_content(std::string("{\"status\":\"") + status + "\"}", "application/json");
  });
  server.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(models_body(limits.model_name, created, limits.context), "application/json");
  });
  server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(router.render_metrics(), "text/plain; version=0.0.4");
  });
  server.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    completions(req, res, Endpoint::kCompletions);
  });
  server.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    completions(req, res, Endpoint::kChatCompletions);
  });
  // Every error answer is JSON: unknown paths and methods too (handlers set their own bodies).
  server.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        ApiError e;
        e.status = res.status;
        e.type = res.status == 404 ? "not_found_error" : "invalid_request_error";
        if (res.status == 404) {
          e.message = "no route for " + req.method + " " + req.path +
                      "; see GET /, GET /v1/models, POST /v1/completions, "
                      "POST /v1/chat/completions, GET /health, GET /metrics";
        } else if (res.status == 413) {
          e.message =
              "the request body is too large: the limit is 1 MiB, and 8 KiB for a body sent as "
              "application/x-www-form-urlencoded (curl -d's default); send Content-Type: "
              "application/json";
        } else {
          e.message = "HTTP error " + std::to_string(res.status);
        }
        res.set_content(error_body(e), "application/json");
        return httplib::Server::HandlerResponse::Handled;
      }));
  server.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        ApiError e;
        e.status = 500;
        e.type = "server_error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& ex) {
          e.message = ex.what();
        } catch (...) {
          e.message = "unknown exception";
        }
        send_error(res, e);
      });
}

void HttpFrontEnd::Impl::completions(const httplib::Request& req, httplib::Response& res,
                                     Endpoint endpoint) {
  if (state.load() != State::kReady) {
    ApiError e = stopped_error();
    e.code = state.load() == State::kLoading ? "loading" : "draining";
    e.message = state.load() == State::kLoading
                    ? "the model is loading; retry when GET /health answers 200"
                    : "the server is shutting down and admits no new requests";
    return send_error(res, e);
  }
  const bool chat = endpoint == Endpoint::kChatCompletions;
  CompletionRequest request;
  const auto parse = chat ? parse_chat_request : parse_completion_request;
  if (auto e = parse(req.body, limits, tokenizer, fresh_seed(), &request)) {
    router.count_invalid();
    return send_error(res, *e);
  }
  auto channel = std::make_shared<RequestChannel>();
  SubmitResult submitted =
      router.submit(request.spec, [channel](const RequestEvent& e) { channel->push(e); });
  if (!submitted.ok()) return send_error(res, rejection_error(submitted));
  // Which dp replica runs it (tests and operators can see the routing).
  res.set_header("X-Tessera-Replica", std::to_string(submitted.replica));
  const uint64_t id = submitted.id;
  const std::string name = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(id);
  const int64_t now = static_cast<int64_t>(std::time(nullptr));

  // A stop string ends the request: the text so far is the answer, and the sequence leaves the
  // batch at the next iteration (reported as stopped). Usage counts the tokens up to the one that
  // completed the stop string.
  const int64_t prompt_tokens = static_cast<int64_t>(request.spec.prompt.size());
  const int logprobs = request.spec.logprobs;
  if (!request.stream) {
    ++in_flight;
    // A client that hangs up is noticed by peeking at its socket every poll interval (cpp-httplib
    // 0.11 would notice only when the answer is written): its request is cancelled.
    const int socket =
        find_connected_socket(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
    auto next_peek = std::chrono::steady_clock::now() + kPollInterval;
    CompletionText text(request.stop);
    LogprobsField field{logprobs, {}};
    std::string out;
    Finish finish = Finish::kNone;
    Usage usage;
    RequestEvent e;
    for (;;) {
      const bool got = channel->pop(&e, kPollInterval);
      if (socket >= 0 && (!got || std::chrono::steady_clock::now() >= next_peek)) {
        next_peek = std::chrono::steady_clock::now() + kPollInterval;
        if (peer_hung_up(socket)) {
          router.cancel(id);
          --in_flight;
          return send_error(res, hung_up_error());  // written to no one; the connection closes
        }
      }
      if (!got) {
        if (stopping.load()) {
          router.cancel(id);
          --in_flight;
          return send_error(res, stopped_error());
        }
        continue;
      }
      if (e.token >= 0) {
        const LoggedToken logged = log_token(e);
        CompletionText::Piece piece =
            text.push(tokenizer.decode_token(e.token), logprobs >= 0 ? &logged : nullptr);
        out += piece.text;
        for (LoggedToken& t : piece.tokens) field.tokens.push_back(std::move(t));
        if (text.stopped()) {
          if (e.finish == Finish::kNone) router.stop(id);
          finish = Finish::kStop;
          usage = {prompt_tokens, text.tokens_pushed(), e.usage.cached_tokens};
          break;
        }
      }
      if (e.finish != Finish::kNone) {
        CompletionText::Piece piece = text.finish();
        out += piece.text;
        for (LoggedToken& t : piece.tokens) field.tokens.push_back(std::move(t));
        finish = e.finish;
        usage = e.usage;
        break;
      }
    }
    if (finish == Finish::kError) {
      ApiError error;
      error.status = 500;
      error.type = "server_error";
      error.message = e.error;
      send_error(res, error);
    } else {
      res.set_content(
          chat ? chat_completion_body(name, now, limits.model_name, out, finish, usage, field)
               : completion_body(name, now, limits.model_name, out, finish, usage, field),
          "application/json");
    }
    --in_flight;
    return;
  }

  // Streaming: one event per piece of final text (CompletionText holds back a split character or
  // a possible stop string), the finish on the last, then [DONE]. The provider is called again
  // and again until it calls sink.done(); returning false (a failed write: the client is gone)
  // ends the response, and the releaser then cancels the request.
  struct Stream {
    std::shared_ptr<RequestChannel> channel;
    CompletionText text;
    bool finished = false;
    bool sent_role = false;  // chat: the first event, {"delta": {"role": "assistant"}}, is out
  };
  auto stream = std::make_shared<Stream>();
  stream->channel = channel;
  stream->text = CompletionText(request.stop);
  const bool include_usage = request.include_usage;
  ++in_flight;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, stream, id, name, now, include_usage, prompt_tokens, logprobs, chat](
          size_t, httplib::DataSink& sink) {
        // A text piece (or the last event) in the endpoint's shape.
        const auto chunk = [&](const std::string& text, Finish finish, const LogprobsField& field) {
          return chat ? chat_chunk_event(name, now, limits.model_name, text, finish, field)
                      : completion_chunk_event(name, now, limits.model_name, text, finish, field);
        };
        if (chat && !stream->sent_role) {
          stream->sent_role = true;
          const std::string event = chat_chunk_event(name, now, limits.model_name, "",
                                                     Finish::kNone, LogprobsField{-1, {}}, true);
          return sink.write(event.data(), event.size());
        }
        RequestEvent e;
        if (!stream->channel->pop(&e, kPollInterval)) {
          if (stopping.load()) {
            router.cancel(id);
            const std::string event = error_event(stopped_error()) + done_event();
            sink.write(event.data(), event.size());
            sink.done();
            stream->finished = true;
          }
          return true;  // nothing yet: httplib checks the socket and calls again
        }
        LogprobsField field{logprobs, {}};
        std::string text;
        if (e.token >= 0) {
          const LoggedToken logged = log_token(e);
          CompletionText::Piece piece =
              stream->text.push(tokenizer.decode_token(e.token), logprobs >= 0 ? &logged : nullptr);
          text = std::move(piece.text);
          field.tokens = std::move(piece.tokens);
        }
        Finish finish = e.finish;
        Usage usage = e.usage;
        if (stream->text.stopped()) {
          if (finish == Finish::kNone) router.stop(id);
          finish = Finish::kStop;
          usage = {prompt_tokens, stream->text.tokens_pushed(), e.usage.cached_tokens};
        }
        if (finish == Finish::kNone) {
          if (text.empty()) return true;
          const std::string event = chunk(text, Finish::kNone, field);
          return sink.write(event.data(), event.size());
        }
        std::string out;
        if (finish == Finish::kError) {
          ApiError error;
          error.status = 500;
          error.type = "server_error";
          error.message = e.error;
          out = error_event(error);
        } else {
          CompletionText::Piece rest = stream->text.finish();
          text += rest.text;
          for (LoggedToken& t : rest.tokens) field.tokens.push_back(std::move(t));
          out = chunk(text, finish, field);
          if (include_usage) {
            out += chat ? chat_usage_chunk_event(name, now, limits.model_name, usage)
                        : usage_chunk_event(name, now, limits.model_name, usage);
          }
        }
        out += done_event();
        stream->finished = true;
        if (!sink.write(out.data(), out.size())) return false;
        sink.done();
        return true;
      },
      [this, stream, id](bool) {
        // Once the last event is made the request is over (finished, or stopped by a stop
        // string); a failed write after it (the client closing right after [DONE]) must not
        // turn a pending stop into a cancellation.
        if (!stream->finished) router.cancel(id);
        --in_flight;
      });
}

HttpFrontEnd::HttpFrontEnd(Router& router, const data::Tokenizer& tokenizer, ApiLimits limits,
                           int threads)
    : impl_(std::make_unique<Impl>(router, tokenizer, std::move(limits))) {
  const size_t n = static_cast<size_t>(std::max(threads, 4));
  impl_->server.new_task_queue = [n] { return new httplib::ThreadPool(n); };
  impl_->server.set_payload_max_length(size_t{1} << 20);
  // An idle keep-alive connection holds its thread this long, and delays shutdown by as much.
  impl_->server.set_keep_alive_timeout(2);
  impl_->install_routes();
}

HttpFrontEnd::~HttpFrontEnd() { shutdown(0); }

core::Result<int> HttpFrontEnd::start(const std::string& host, int port) {
  int bound = -1;
  if (port == 0) {
    bound = impl_->server.bind_to_any_port(host);
  } else if (impl_->server.bind_to_port(host, port)) {
    bound = port;
  }
  if (bound <= 0) {
    return core::Status::error("cannot listen on " + host + ":" + std::to_string(port) +
                               " (in use, not an address of this machine, or not permitted); "
                               "pick another --host/--port, or --port 0 for a free port");
  }
  impl_->listener = std::thread([this] { impl_->server.listen_after_bind(); });
  // stop() is a no-op until the listen loop runs: wait for it, so shutdown() always ends it.
  for (int i = 0; i < 5000 && !impl_->server.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return bound;
}

void HttpFrontEnd::set_state(State state) { impl_->state.store(state); }

void HttpFrontEnd::shutdown(double seconds) {
  if (!impl_->listener.joinable()) return;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (impl_->in_flight.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  impl_->stopping.store(true);
  // Handlers still waiting see `stopping` within one poll interval and answer 503.
  while (impl_->in_flight.load() > 0 &&
         std::chrono::steady_clock::now() < deadline + std::chrono::seconds(2)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  impl_->server.stop();
  impl_->listener.join();
}

}  // namespace tessera::serve
