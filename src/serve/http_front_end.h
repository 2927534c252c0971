// HttpFrontEnd: tessera-serve's HTTP transport (cpp-httplib) on world rank 0. Its handlers run on
// the server's own thread pool and never touch MPI or the model: they parse a request
// (openai_api.h), submit it to the Router (router.h: the least-loaded dp replica) with a callback
// that feeds a per-request channel, and wait on that channel while the serving loops produce the
// tokens.
//   POST /v1/completions  OpenAI completions; stream=true answers with server-sent events
//   GET  /v1/models       the one served model
//   GET  /health          200 when ready, 503 while loading or draining
//   GET  /metrics         Prometheus text (metrics.h), totals and per dp replica
//   GET  /                the playground page (playground.h)
// A completion's response names its replica in the header X-Tessera-Replica.
// A client that goes away cancels its request: a streaming one when a write to it fails, a
// non-streaming one when a peek at its socket sees the hang-up (peer_socket.h). Thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/status.h"
#include "serve/openai_api.h"

namespace tessera::data {
class Tokenizer;
}

namespace tessera::serve {

class Router;

class HttpFrontEnd {
 public:
  enum class State { kLoading, kReady, kDraining };
  // router and tokenizer are borrowed for the front end's lifetime. threads: the HTTP thread
  // pool; each waiting or running request holds one, so size it above max_running + max_queue.
  HttpFrontEnd(Router& router, const data::Tokenizer& tokenizer, ApiLimits limits,
               int threads);
  // Stops at once if still running: a handler still waiting answers 503.
  ~HttpFrontEnd();
  HttpFrontEnd(const HttpFrontEnd&) = delete;
  HttpFrontEnd& operator=(const HttpFrontEnd&) = delete;

  // Binds host:port (port 0: a free port) and serves from a background thread, in State
  // kLoading. Returns the bound port, or an error naming the address.
  core::Result<int> start(const std::string& host, int port);
  void set_state(State state);
  // Waits up to `seconds` for the responses in flight to be written, then stops and joins.
  void shutdown(double seconds);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::serve
