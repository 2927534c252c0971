// tessera-serve: an OpenAI-compatible HTTP server over the batched KV-cache Generator
// (docs/SERVING.md), on a dp x tp grid. World rank 0 runs HTTP and the Router, which sends each
// request to the least-loaded dp replica; each replica's tp rank 0 runs its scheduler and feeds
// its tp ranks each iteration's changes; every tp rank runs the same batched decode. Replica
// leaders and world rank 0 talk point to point (route_channel.h). MPI and the model stay on main
// threads.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <limits>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "backends/backend.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/stored_config.h"
#include "core/app.h"
#include "core/config.h"
#include "core/log.h"
#include "core/threads.h"
#include "data/tokenizer.h"
#include "generate/generator.h"
#include "models/gpt.h"
#include "parallel/process_grid.h"
#include "serve/engine.h"
#include "serve/http_front_end.h"
#include "serve/route_channel.h"
#include "serve/route_protocol.h"
#include "serve/router.h"
#include "serve/scheduler.h"
#include "serve/serve_loop.h"
#include "serve/tp_channel.h"

using namespace tessera;

namespace {
// Set by SIGTERM / SIGINT: stop admitting, finish what runs, exit 0. World rank 0 decides (it
// tells its tp group through the shutdown flag and the other replicas through the Router); the
// signal on other ranks is noted and ignored.
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
        "/metrics). Example: tessera-serve out/tiny/model.h5 --port 8000; under mpirun -n N, "
        "--tp T gives N / T data-parallel replicas of T ranks each"};
    // Defaults < the --config file < --set overrides < flags given on the command line.
    const core::ServeConfig defaults;
    std::string weights_path, config_path, tokenizer_prefix, model_name, device = defaults.device;
    std::string host = defaults.host;
    std::vector<std::string> overrides;
    int port = defaults.port, max_sequences = defaults.max_sequences,
        max_queue = defaults.max_queue, tp = defaults.tp, threads = defaults.threads,
        max_prefill_tokens = defaults.max_prefill_tokens, step_delay_ms = 0;
    bool prefix_cache = defaults.prefix_cache;
    double kv_cache_mb = defaults.kv_cache_mb;
    app.add_option("checkpoint", weights_path,
                   "a checkpoint (.h5): model.h5, a step_<n>.h5, or a converted one")
        ->required();
    app.add_option("--config", config_path,
                   "YAML file with a serve section (serve.port, serve.max_queue, ...; "
                   "configs/serve.yaml); flags given here override it");
    app.add_option("--set", overrides,
                   "override a key of the config: --set serve.max_queue=8 (repeatable)");
    auto* host_opt = app.add_option("--host", host, "address to listen on")->capture_default_str();
    auto* port_opt =
        app.add_option("--port", port, "TCP port; 0 picks a free one (printed when ready)")
            ->capture_default_str();
    auto* seq_opt = app.add_option("--max-sequences", max_sequences,
                                   "sequences decoded at once (KV-cache slots)")
                        ->capture_default_str();
    auto* queue_opt =
        app.add_option("--max-queue", max_queue,
                       "requests waiting beyond the free slots, per replica; beyond it: HTTP 429 "
                       "with Retry-After")
            ->capture_default_str();
    auto* kv_opt =
        app.add_option("--kv-cache-mb", kv_cache_mb,
                       "KV-cache pool per rank in MiB, paged in blocks of 16 positions: what is "
                       "allocated, and a request is admitted when its prompt + max_tokens (whole "
                       "blocks) fit what the running ones leave (0: every slot its whole context)")
            ->capture_default_str();
    auto* prefill_opt =
        app.add_option("--max-prefill-tokens", max_prefill_tokens,
                       "prompt tokens prefilled per decode step, over all requests, oldest first: "
                       "a long prompt is split over steps so running streams keep decoding (0: "
                       "the device's, 128 on cpu and 2048 on cuda; the context or more: no "
                       "limit)")
            ->capture_default_str();
    auto* prefix_opt =
        app.add_option("--prefix-cache", prefix_cache,
                       "true: a request whose prompt starts with the tokens a freed slot holds "
                       "reuses their keys and values and prefills only the rest (the tokens do not "
                       "change); false: every prompt is prefilled whole")
            ->capture_default_str();
    auto* tp_opt = app.add_option("--tp", tp,
                                  "tensor-parallel size; the ranks form (ranks / tp) replicas "
                                  "(default: every rank, one replica)");
    auto* device_opt =
        app.add_option("--device", device, "cpu or cuda (one GPU per rank, from the local rank)")
            ->capture_default_str();
    auto* tokenizer_opt =
        app.add_option("--tokenizer", tokenizer_prefix,
                       "tokenizer prefix (default: the one in the checkpoint's config)");
    auto* name_opt = app.add_option("--model-name", model_name,
                                    "the name /v1/models reports and requests may give (default: "
                                    "the checkpoint path as given)");
    auto* threads_opt = app.add_option("--threads", threads,
                                       "compute threads per rank (0: cores / ranks on the node)");
    app.add_option("--debug-step-delay-ms", step_delay_ms,
                   "sleep after each decode step (tests: makes requests last)")
        ->group("");  // hidden
    std::optional<int> help_exit;
    TESSERA_RETURN_IF_ERROR(core::parse_command_line(app, ac, av, &help_exit));
    if (help_exit) return *help_exit;
    // The serve section of --config and --set, checked (errors name the key and the fix).
    core::ServeConfig sc;
    if (!config_path.empty() || !overrides.empty()) {
      auto file = config_path.empty() ? core::parse_config("", "--set", overrides)
                                      : core::load_config(config_path, overrides);
      if (!file) return file.status();
      core::Config untouched;
      untouched.serve = file->serve;
      if (!(*file == untouched)) {
        return core::Status::error(
            (config_path.empty() ? std::string("--set") : "config file '" + config_path + "'") +
            " sets keys outside the serve section; tessera-serve reads only serve.* keys (the "
            "model and its tokenizer come from the checkpoint): remove the others, or use "
            "configs/serve.yaml as a start");
      }
      sc = file->serve;
    }
    // Flags given on the command line win over the file. Each is checked by its key's rule and
    // named as the flag in the error.
    const auto take = [&sc](CLI::Option* opt, auto member, const auto& value) -> core::Status {
      if (opt->count() == 0) return core::Status::ok();
      core::ServeConfig alone;
      alone.*member = value;
      if (auto valid = core::validate_serve(alone); !valid) {
        return valid.with_context(opt->get_name() + " " + opt->results().back() + ": ");
      }
      sc.*member = value;
      return core::Status::ok();
    };
    using SC = core::ServeConfig;
    TESSERA_RETURN_IF_ERROR(take(host_opt, &SC::host, host));
    TESSERA_RETURN_IF_ERROR(take(port_opt, &SC::port, port));
    TESSERA_RETURN_IF_ERROR(take(seq_opt, &SC::max_sequences, max_sequences));
    TESSERA_RETURN_IF_ERROR(take(queue_opt, &SC::max_queue, max_queue));
    TESSERA_RETURN_IF_ERROR(take(kv_opt, &SC::kv_cache_mb, kv_cache_mb));
    TESSERA_RETURN_IF_ERROR(take(prefill_opt, &SC::max_prefill_tokens, max_prefill_tokens));
    TESSERA_RETURN_IF_ERROR(take(prefix_opt, &SC::prefix_cache, prefix_cache));
    TESSERA_RETURN_IF_ERROR(take(tp_opt, &SC::tp, tp));
    TESSERA_RETURN_IF_ERROR(take(device_opt, &SC::device, device));
    TESSERA_RETURN_IF_ERROR(take(tokenizer_opt, &SC::tokenizer, tokenizer_prefix));
    TESSERA_RETURN_IF_ERROR(take(name_opt, &SC::model_name, model_name));
    TESSERA_RETURN_IF_ERROR(take(threads_opt, &SC::threads, threads));
    host = sc.host;
    port = sc.port;
    max_sequences = sc.max_sequences;
    max_queue = sc.max_queue;
    kv_cache_mb = sc.kv_cache_mb;
    // 128 on a CPU: docs/PERF.md "Serving", prefill budget (a 124M decode step stalls about
    // 300 ms for a long prompt, against 1.7 s unchunked, and the long prompt's own first token
    // comes no later). 2048 on a GPU, where a step's fixed cost is far larger against a token's:
    // not measured here.
    max_prefill_tokens = sc.max_prefill_tokens > 0 ? sc.max_prefill_tokens
                         : sc.device == "cuda"     ? 2048
                                                   : 128;
    prefix_cache = sc.prefix_cache;
    tp = sc.tp;
    device = sc.device;
    tokenizer_prefix = sc.tokenizer;
    model_name = sc.model_name;
    threads = sc.threads;
    char kv_mb_text[32];
    std::snprintf(kv_mb_text, sizeof kv_mb_text, "%g", kv_cache_mb);
    if (model_name.empty()) model_name = weights_path;
    auto config = checkpoint::read_stored_config(weights_path);
    if (!config) return config.status();
    int world_size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    if (tp == 0) tp = world_size;
    TESSERA_RETURN_IF_ERROR(parallel::check_inference_grid(*config, tp, world_size));
    // One position of KV cache on one rank: k and v, every layer, this rank's share of the
    // channels, in float (models/kv_cache.h).
    const int64_t kv_bytes_per_token =
        2 * config->model.n_layer * (config->model.n_embd / tp) * int64_t{sizeof(float)};
    // The KV cache is paged (models/kv_cache.h): the budget is a pool of whole blocks, at most
    // what max_sequences full contexts would take.
    const int64_t block = models::KvCache::kDefaultBlockSize;
    const int64_t kv_positions = serve::kv_budget_tokens(kv_cache_mb, kv_bytes_per_token);
    const int64_t slot_blocks = (config->model.max_seq_len + block - 1) / block;
    const int64_t kv_blocks = std::min(kv_positions / block, max_sequences * slot_blocks);
    if (kv_cache_mb > 0 && kv_blocks < 1) {
      char need[32];
      std::snprintf(need, sizeof need, "%.4g",
                    static_cast<double>(block * kv_bytes_per_token) / 1048576.0);
      return core::Status::error(
          std::string("serve.kv_cache_mb (--kv-cache-mb) ") + kv_mb_text + " holds " +
          std::to_string(kv_positions) + " token positions at " +
          std::to_string(kv_bytes_per_token) + " bytes each (this model at tp " +
          std::to_string(tp) + "); the KV cache is paged in blocks of " + std::to_string(block) +
          " positions and needs at least one: give at least " + need + " MiB");
    }
    const int64_t kv_budget = kv_cache_mb > 0 ? kv_blocks * block : 0;
    install_signal_handlers();
    parallel::ProcessGrid grid(tp);
    const int dp = grid.dp_size();
    const bool leader = grid.world_rank() == 0;       // HTTP and the Router
    const bool replica_leader = grid.tp_rank() == 0;  // a replica's scheduler
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
    so.kv_budget_tokens = kv_budget;
    so.kv_bytes_per_token = kv_bytes_per_token;
    so.kv_cache_mb = kv_cache_mb;
    so.kv_block_size = block;
    // The Router applies max_queue for the other replicas (router.h): theirs never refuses.
    if (!leader) so.max_queue = std::numeric_limits<int64_t>::max() / 2;
    serve::Scheduler scheduler(so);
    serve::Router router(scheduler, dp);
    std::unique_ptr<serve::HttpFrontEnd> front_end;
    std::string url;
    double listen_failed = 0;
    core::Status listen_status;
    if (leader) {
      serve::ApiLimits limits{model_name, so.context, so.vocab_size};
      front_end = std::make_unique<serve::HttpFrontEnd>(router, *tokenizer, limits,
                                                        dp * (max_sequences + max_queue) + 16);
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

    // Decode only: no gradients, no backward scratch, no attention probabilities.
    models::Gpt model(config->model, 1, config->model.max_seq_len, &grid.device_tp_comm(),
                      backend->get(), false, {}, models::Gpt::Purpose::kInference);
    auto state = checkpoint::read_checkpoint(weights_path, model, nullptr, grid);
    if (!state) return state.status();
    generate::Generator generator(model, max_sequences, &grid.tp_comm(),
                                  kv_cache_mb > 0 ? kv_blocks : 0);
    // The backend's frozen weight copies are made here, before /health says ready, not during
    // the first request (a collective over the tp group, like every step).
    generator.warm_up();
    generator.set_prefill_budget(max_prefill_tokens);
    generator.set_prefix_reuse(prefix_cache);
    serve::Engine engine(generator);
    std::unique_ptr<serve::TpChannel> channel;
    if (tp > 1) channel = std::make_unique<serve::TpChannel>(grid.tp_comm());
    // Collective over the world: the replica leaders' routing link (dp > 1).
    std::unique_ptr<serve::RouteChannel> route;
    if (dp > 1) route = std::make_unique<serve::RouteChannel>(MPI_COMM_WORLD, tp);
    // Every replica has its weights before world rank 0 says it is ready.
    grid.world_comm().barrier();

    if (!replica_leader) {
      TESSERA_RETURN_IF_ERROR(serve::run_follower(engine, *channel));
      return 0;
    }
    serve::LeaderOptions lo;
    lo.step_delay_ms = step_delay_ms;
    if (!leader) {
      // Another replica's leader: requests come from the Router, events go back to it; it drains
      // when the Router says so, reports bye, and leaves after the Router's fin.
      serve::ReplicaAgent agent(scheduler);
      lo.pump = [&]() -> core::Result<bool> {
        bool moved = false;
        int from = 0;
        std::vector<uint8_t> bytes;
        while (route->poll(&from, &bytes)) {
          auto message = serve::decode_router_message(bytes.data(), bytes.size());
          if (!message) return message.status();
          agent.on_message(*message);
          moved = true;
        }
        if (auto report = agent.take_report()) {
          route->send(0, serve::encode_report(*report));
          moved = true;
        }
        return moved;
      };
      TESSERA_RETURN_IF_ERROR(serve::run_leader(scheduler, engine, channel.get(), lo));
      route->send(0, serve::encode_report(agent.bye_report()));
      auto nap = std::chrono::microseconds(50);
      for (bool fin = false; !fin;) {
        int from = 0;
        std::vector<uint8_t> bytes;
        if (!route->poll(&from, &bytes)) {
          std::this_thread::sleep_for(nap);
          nap = std::min(nap * 2, std::chrono::microseconds(2000));
          continue;
        }
        auto message = serve::decode_router_message(bytes.data(), bytes.size());
        if (!message) return message.status();
        fin = agent.on_message(*message);
      }
      route->flush();
      return 0;
    }
    front_end->set_state(serve::HttpFrontEnd::State::kReady);
    core::log_info("tessera-serve: ready on " + url + " (model '" + model_name + "', dp " +
                   std::to_string(dp) + " x tp " + std::to_string(tp) + ", max sequences " +
                   std::to_string(max_sequences) + ", max queue " + std::to_string(max_queue) +
                   ", prefill " + std::to_string(max_prefill_tokens) +
                   " tokens a step, prefix cache " + (prefix_cache ? "on" : "off") +
                   (kv_budget > 0 ? ", KV-cache budget " + std::to_string(kv_budget) +
                                        " positions (" + std::to_string(kv_blocks) + " blocks of " +
                                        std::to_string(block) + ") per replica"
                                  : std::string()) +
                   ")");
    lo.stop_signal = &g_stop_signal;
    lo.on_drain = [&] {
      router.drain();  // tells the other replicas
      front_end->set_state(serve::HttpFrontEnd::State::kDraining);
      core::log_info("tessera-serve: draining (signal " + std::to_string(g_stop_signal.load()) +
                     "): no new requests; finishing the queued and running ones");
    };
    if (dp > 1) {
      const auto send_outgoing = [&] {
        bool sent = false;
        for (auto& [replica, message] : router.take_outgoing()) {
          route->send(replica, serve::encode_router_message(message));
          sent = true;
        }
        return sent;
      };
      lo.pump = [&]() -> core::Result<bool> {
        bool moved = send_outgoing();
        int from = 0;
        std::vector<uint8_t> bytes;
        while (route->poll(&from, &bytes)) {
          auto report = serve::decode_report(bytes.data(), bytes.size());
          if (!report) return report.status();
          router.on_report(from, *report);
          moved = true;
        }
        return send_outgoing() || moved;  // a bye makes the replica's fin due
      };
      lo.may_shut_down = [&] { return router.remotes_stopped(); };
    }
    TESSERA_RETURN_IF_ERROR(serve::run_leader(scheduler, engine, channel.get(), lo));
    if (route) route->flush();
    front_end->shutdown(10);
    const serve::Metrics m = router.metrics();
    core::log_info("tessera-serve: drained and stopped (" +
                   std::to_string(m.finished_stop + m.finished_length) + " requests completed, " +
                   std::to_string(m.finished_cancelled) + " cancelled, " +
                   std::to_string(m.generation_tokens) + " tokens generated)");
    return 0;
  });
}
