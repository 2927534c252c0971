// Fault injection for the no-hang tests: TESSERA_INJECT_FAULT="<site>@<world rank>" makes that
// one rank fail at that site, so tests can show a failure on one rank ends every rank. Sites:
//   data      - the rank opens a training data path that does not exist (a file only it lacks)
//   shard     - the rank opens `<data.train>.injected-corrupt` instead (the test puts a bad
//               shard there)
//   step      - the rank throws from inside its third training step, while the others wait in
//               a collective (an exception in a kernel)
//   nonfinite - the rank alone sees a NaN gradient norm at steps 3 and 4 (every rank must still
//               reach the same verdict: stop, or skip with train.skip_nonfinite)
//   stop      - the rank stops itself (SIGSTOP) in its third step, between forward and backward:
//               the others wait in a collective until their watchdogs end the job
// Unset (always, outside tests) it costs one getenv at start-up.
#pragma once

#include <string>

namespace tessera::core {

// True on the rank the variable names for `site`. Reads the rank from the log identity.
bool fault_requested(const char* site);

// Crash injection for the checkpoint tests: TESSERA_CKPT_KILL="<point>:<n>[:<world rank>]" makes
// the process SIGKILL itself (no unwinding, no flush: as a node failure would) the n-th time
// (1-based) it reaches `point`, on every rank or only on the one named. Points, in the order a
// checkpoint passes them: dataset-<k> (before dataset k of the file is written), before-rename
// (file complete and closed, still .tmp), after-rename (renamed, `latest` not yet moved),
// latest-tmp (new `latest.tmp` written, not yet renamed), before-prune (`latest` moved, old
// files not yet deleted). TESSERA_CKPT_STOP, same syntax, makes the process stop itself
// (SIGSTOP, as a frozen node) instead, for the watchdog tests. Unset, they cost two getenv per
// call.
void kill_point(const std::string& point);

// Prints `[rank r] injected SIGSTOP <why>; pid <pid>` on stderr and stops the process (all its
// threads) until a SIGCONT or SIGKILL: a rank frozen by a debugger, a hung driver or a paused VM.
void stop_self(const std::string& why);

}  // namespace tessera::core
