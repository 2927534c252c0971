// The shell every app's main() runs in: thread environment, MPI from the first line (even on one
// rank), and one error path: `[rank r (dp d, tp t)] <app>: what failed: why; fix` on stderr, then
// a non-zero exit on every rank (MPI_Abort when other ranks may be blocked in a collective). When
// every rank fails with the same message within 2 s (a grid or config error all detect alike),
// rank 0 alone prints it, as `[all N ranks] <app>: ...`, and all exit 1 without an abort.
#pragma once

#include <functional>
#include <optional>

#include "core/status.h"

namespace CLI {
class App;
}

namespace tessera::core {

// Runs `body` between MPI_Init and MPI_Finalize. A returned error Status or a thrown exception
// is printed with the rank prefix (once, if every rank failed alike) and ends the job non-zero.
// `body` returns the exit code.
int run_app(const char* app_name, int argc, char** argv,
            const std::function<Result<int>(int argc, char** argv)>& body);

// Parses the command line into `app`. --help prints the usage and sets *help_exit to the exit
// code the app should return; a parse error is a Status naming the problem.
Status parse_command_line(CLI::App& app, int argc, char** argv, std::optional<int>* help_exit);

}  // namespace tessera::core
