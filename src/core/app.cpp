// run_app: MPI lifetime and the uniform error exit; see app.h.
#include "core/app.h"

#include <mpi.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <exception>
#include <string>

#include "core/log.h"
#include "core/threads.h"

namespace tessera::core {

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
    log_error(std::string(app_name) + ": " + failure);
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
    return Status::error("command line: " + std::string(e.what()) + "; see --help");
  }
  return Status::ok();
}

}  // namespace tessera::core
