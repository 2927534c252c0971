// tessera-serve: an OpenAI-compatible HTTP server over the batched KV-cache Generator
// (docs/SERVING.md). World rank 0 runs HTTP and the scheduler; every tp rank runs the same
// batched decode, fed each iteration's changes over tp. MPI and the model stay on main threads.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <csignal>
#include <memory>
#include <optional>

#include "backends/backend.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/stored_config.h"
#include "core/app.h"
#include "core/log.h"
#include "core/threads.h"
#include "data/tokenizer.h"
#include "generate/generator.h"
#include "models/gpt.h"
#include "parallel/process_grid.h"
#include "serve/engine.h"
#include "serve/http_front_end.h"
#include "serve/scheduler.h"
#include "serve/serve_loop.h"
#include "serve/tp_channel.h"

using namespace tessera;

namespace {
// Set by SIGTERM / SIGINT: stop admitting, finish what runs, exit 0. World rank 0 decides (it
// tells the others through the shutdown flag); the signal on other ranks is noted and ignored.
std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int signal) { g_stop_signal.store(signal); }

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  // A client that hangs up mid-stream must fail our write, not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
}
}  // namespace

int main(int argc, char** argv) {
  return core::run_app("tessera-serve", argc, argv, [](int ac, char** av) -> core::Result<int> {
    CLI::App app{
        "Serve a trained model over HTTP (OpenAI completions API, server-sent events, /health, "
        "/metrics). Example: tessera-serve out/tiny/model.h5 --port 8000; under mpirun, --tp "
        "equal to the number of ranks"};
    std::string weights_path, tokenizer_prefix, model_name, device = "cpu";
    std::string host = "127.0.0.1";
    int port = 8000, max_sequences = 8, max_queue = 64, tp = 0, threads = 0, step_delay_ms = 0;
    app.add_option("checkpoint", weights_path,
                   "a checkpoint (.h5): model.h5, a step_<n>.h5, or a converted one")
        ->required();
    app.add_option("--host", host, "address to listen on")->capture_default_str();
    app.add_option("--port", port, "TCP port; 0 picks a free one (printed when ready)")
        ->capture_default_str();
    app.add_option("--max-sequences", max_sequences, "sequences decoded at once (KV-cache slots)")
        ->capture_default_str();
    app.add_option("--max-queue", max_queue,
                   "requests waiting for a slot; beyond it: HTTP 429 with Retry-After")
        ->capture_default_str();
    app.add_option("--tp", tp, "tensor-parallel size (default and only choice: every rank)");
    app.add_option("--device", device, "cpu or cuda (one GPU per rank, from the local rank)")
        ->capture_default_str();
    app.add_option("--tokenizer", tokenizer_prefix,
                   "tokenizer prefix (default: the one in the checkpoint's config)");
    app.add_option("--model-name", model_name,
                   "the name /v1/models reports and requests may give (default: the checkpoint "
                   "path as given)");
    app.add_option("--threads", threads, "compute threads per rank (0: cores / ranks on the node)");
    app.add_option("--debug-step-delay-ms", step_delay_ms,
                   "sleep after each decode step (tests: makes requests last)")
        ->group("");  // hidden
    std::optional<int> help_exit;
    TESSERA_RETURN_IF_ERROR(core::parse_command_line(app, ac, av, &help_exit));
    if (help_exit) return *help_exit;
    if (max_sequences < 1) {
      return core::Status::error("--max-sequences " + std::to_string(max_sequences) +
                                 ": at least one sequence must decode; pick 1 or more");
    }
    if (max_queue < 1) {
      return core::Status::error("--max-queue " + std::to_string(max_queue) +
                                 ": every request waits in the queue before it runs; pick 1 or "
                                 "more");
    }
    if (port < 0 || port > 65535) {
      return core::Status::error("--port " + std::to_string(port) +
                                 " is not a TCP port; pick 1-65535, or 0 for a free one");
    }
    if (model_name.empty()) model_name = weights_path;
    auto config = checkpoint::read_stored_config(weights_path);
    if (!config) return config.status();
    int world_size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    if (tp == 0) tp = world_size;
    TESSERA_RETURN_IF_ERROR(parallel::check_inference_grid(*config, tp, world_size));
    if (world_size / tp > 1) {
      return core::Status::error(
          "dp replicas are not supported yet; run with --tp equal to the number of ranks (" +
          std::to_string(world_size) + ")");
    }
    install_signal_handlers();
    parallel::ProcessGrid grid(tp);
    const bool leader = grid.world_rank() == 0;
    auto backend = backends::make_backend(device, grid.local_rank(), grid.local_size(), "--device");
    if (!backend) return backend.status();
    grid.attach_device(**backend);
    core::set_threads(threads, grid.local_size());
    if (tokenizer_prefix.empty()) tokenizer_prefix = config->data.tokenizer;
    auto tokenizer = data::load_tokenizer_for_model(tokenizer_prefix, config->model.vocab_size);
    if (!tokenizer) return tokenizer.status();

    // World rank 0 listens first, so /health answers 503 while the weights load.
    serve::SchedulerOptions so;
    so.max_queue = max_queue;
    so.max_running = max_sequences;
    so.context = config->model.max_seq_len;
    so.vocab_size = config->model.vocab_size;
    so.eot_token = tokenizer->eot_token();
    serve::Scheduler scheduler(so);
    std::unique_ptr<serve::HttpFrontEnd> front_end;
    std::string url;
    double listen_failed = 0;
    core::Status listen_status;
    if (leader) {
      serve::ApiLimits limits{model_name, so.context, so.vocab_size};
      front_end = std::make_unique<serve::HttpFrontEnd>(scheduler, *tokenizer, limits,
                                                        max_sequences + max_queue + 16);
      auto bound = front_end->start(host, port);
      if (bound) {
        url = "http://" + host + ":" + std::to_string(*bound);
        core::log_info("tessera-serve: loading " + weights_path + "; " + url +
                       "/health answers 503 until the model is ready");
      } else {
        listen_status = bound.status();
        listen_failed = 1;
      }
    }
    // Only rank 0 can fail to listen: tell every rank, so all stop alike.
    grid.world_comm().all_reduce(&listen_failed, 1, parallel::ReduceOp::kMax);
    if (listen_failed != 0) {
      if (leader) return listen_status;
      return core::Status::error("world rank 0 could not open its HTTP port (see its message)");
    }

    models::Gpt model(config->model, 1, config->model.max_seq_len, &grid.device_tp_comm(),
                      backend->get());
    auto state = checkpoint::read_checkpoint(weights_path, model, nullptr, grid);
    if (!state) return state.status();
    generate::Generator generator(model, max_sequences, &grid.tp_comm());
    serve::Engine engine(generator);
    std::unique_ptr<serve::TpChannel> channel;
    if (tp > 1) channel = std::make_unique<serve::TpChannel>(grid.tp_comm());

    if (!leader) {
      TESSERA_RETURN_IF_ERROR(serve::run_follower(engine, *channel));
      return 0;
    }
    front_end->set_state(serve::HttpFrontEnd::State::kReady);
    core::log_info("tessera-serve: ready on " + url + " (model '" + model_name + "', tp " +
                   std::to_string(tp) + ", max sequences " + std::to_string(max_sequences) +
                   ", max queue " + std::to_string(max_queue) + ")");
    serve::LeaderOptions lo;
    lo.stop_signal = &g_stop_signal;
    lo.step_delay_ms = step_delay_ms;
    lo.on_drain = [&] {
      front_end->set_state(serve::HttpFrontEnd::State::kDraining);
      core::log_info("tessera-serve: draining (signal " + std::to_string(g_stop_signal.load()) +
                     "): no new requests; finishing the queued and running ones");
    };
    TESSERA_RETURN_IF_ERROR(serve::run_leader(scheduler, engine, channel.get(), lo));
    front_end->shutdown(10);
    const serve::Metrics m = scheduler.metrics();
    core::log_info("tessera-serve: drained and stopped (" +
                   std::to_string(m.finished_stop + m.finished_length) + " requests completed, " +
                   std::to_string(m.finished_cancelled) + " cancelled, " +
                   std::to_string(m.generation_tokens) + " tokens generated)");
    return 0;
  });
}
