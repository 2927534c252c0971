// Fault injection for the no-hang tests: TESSERA_INJECT_FAULT="<site>@<world rank>" makes that
// one rank fail at that site, so tests can show a failure on one rank ends every rank. Sites:
//   data  - the rank opens a training data path that does not exist (a file only it lacks)
//   shard - the rank opens `<data.train>.injected-corrupt` instead (the test puts a bad shard
//   there) step  - the rank throws from inside its third training step, while the others wait in a
//           collective (an exception in a kernel)
// Unset (always, outside tests) it costs one getenv at start-up.
#pragma once

namespace tessera::core {

// True on the rank the variable names for `site`. Reads the rank from the log identity.
bool fault_requested(const char* site);

}  // namespace tessera::core
