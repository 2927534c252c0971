// run_app: MPI lifetime and the uniform error exit; see app.h.
#include "core/app.h"

#include <mpi.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "core/log.h"
#include "core/threads.h"

namespace tessera::core {
namespace {

// How long a failing rank waits to learn whether every rank failed alike.
constexpr auto kAgreeTimeout = std::chrono::seconds(2);

// Collective over `comm`, but called only by ranks that failed: true when every rank of `comm`
// arrives here within kAgreeTimeout with the same `message`. A rank that did not fail never
// joins, so the reduction cannot complete and the answer is false (the pending request is left
// behind: the job is aborted next). The verdict is the same on every rank that gets one:
// max(h) == min(h), computed as max over {h, ~h}.
bool every_rank_failed_alike(MPI_Comm comm, const std::string& message) {
  const uint64_t h = std::hash<std::string>{}(message);  // one binary: one hash function
  uint64_t mine[2] = {h, ~h};
  uint64_t reduced[2] = {0, 0};
  MPI_Request request;
  if (MPI_Iallreduce(mine, reduced, 2, MPI_UINT64_T, MPI_MAX, comm, &request) != MPI_SUCCESS) {
    return false;
  }
  const auto deadline = std::chrono::steady_clock::now() + kAgreeTimeout;
  int done = 0;
  while (!done && std::chrono::steady_clock::now() < deadline) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return done && reduced[0] == h && ~reduced[1] == h;
}

}  // namespace

int run_app(const char* app_name, int argc, char** argv,
            const std::function<Result<int>(int, char**)>& body) {
  prepare_thread_environment(argc, argv);
  // Open MPI 4.1 picks a slow tree algorithm for non-blocking all-reduce with fewer than 4 ranks
  // or in place (the gradient reducer's case); the ring algorithm is 2-3x faster there
  // (docs/PERF.md). A user's own setting wins.
  setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "1", /*overwrite=*/0);
  MPI_Init(&argc, &argv);
  int world_rank = 0, world_size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  // Used only by the failure agreement below, so it never meets the app's own collectives.
  MPI_Comm agree_comm = MPI_COMM_NULL;
  if (world_size > 1) MPI_Comm_dup(MPI_COMM_WORLD, &agree_comm);
  // One rank is the 1 x 1 grid; with more, the process grid sets the coordinates once built.
  set_log_identity(world_rank, world_size == 1 ? 0 : -1, world_size == 1 ? 0 : -1);
  std::string failure;
  int code = 0;
  try {
    Result<int> r = body(argc, argv);
    if (r) {
      code = *r;
    } else {
      failure = r.status().message();
    }
  } catch (const std::exception& e) {
    failure = e.what();
  }
  if (!failure.empty()) {
    const std::string line = std::string(app_name) + ": " + failure;
    if (world_size > 1 && every_rank_failed_alike(agree_comm, line)) {
      // Every rank is here with the same message (a grid or config error all detect alike):
      // say it once and end cleanly, without Open MPI's abort banner.
      if (world_rank == 0) {
        std::fprintf(stderr, "[all %d ranks] %s\n", world_size, line.c_str());
        std::fflush(stderr);
      }
      MPI_Finalize();
      return 1;
    }
    log_error(line);
    // Other ranks may be inside a collective: only an abort is sure to end them all.
    if (world_size > 1) MPI_Abort(MPI_COMM_WORLD, 1);
    MPI_Finalize();
    return 1;
  }
  MPI_Finalize();
  return code;
}

Status parse_command_line(CLI::App& app, int argc, char** argv, std::optional<int>* help_exit) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    *help_exit = app.exit(e);
  } catch (const CLI::ParseError& e) {
    // A first word that is no subcommand (CLI11 says only "A subcommand is required"): name it
    // and the choices.
    const std::vector<CLI::App*> commands = app.get_subcommands([](CLI::App*) { return true; });
    if (!commands.empty() && argc > 1 && argv[1][0] != '-') {
      std::string names;
      bool known = false;
      for (const CLI::App* c : commands) {
        known = known || c->get_name() == argv[1];
        names += (names.empty() ? "" : ", ") + c->get_name();
      }
      if (!known) {
        return Status::error("command line: unknown command '" + std::string(argv[1]) +
                             "'; use one of " + names + " (see --help)");
      }
    }
    return Status::error("command line: " + std::string(e.what()) + "; see --help");
  }
  return Status::ok();
}

}  // namespace tessera::core
