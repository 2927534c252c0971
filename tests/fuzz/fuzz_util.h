// Shared helpers of the libFuzzer targets (tests/fuzz/*_fuzz.cpp): scratch files for the readers
// that take a path, the checks that end a run with a finding, and seed writing.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

namespace tessera::fuzz {

// A per-process scratch path for `name` (in /dev/shm when it exists: no disk I/O per input).
inline std::string scratch_path(const std::string& name) {
  std::error_code ec;
  const std::string dir = std::filesystem::is_directory("/dev/shm", ec) ? "/dev/shm" : "/tmp";
  return dir + "/tessera-fuzz-" + std::to_string(::getpid()) + "-" + name;
}

// Writes `bytes` to `path` (replacing it); aborts if it cannot, which is the harness's fault.
inline void write_file(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::fprintf(stderr, "fuzz harness: cannot write %s\n", path.c_str());
    std::abort();
  }
}
inline void write_file(const std::string& path, std::string_view text) {
  write_file(path, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

// A property of the code under test failed: print what and abort, which libFuzzer reports as a
// crash and saves the input as an artifact.
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "FUZZ PROPERTY FAILED: %s\n", what.c_str());
  std::abort();
}
#define TESSERA_FUZZ_CHECK(cond, what)                                    \
  do {                                                                    \
    if (!(cond)) ::tessera::fuzz::fail(std::string(#cond ": ") + (what)); \
  } while (0)

// The directory to write seed inputs to when TESSERA_FUZZ_MAKE_SEEDS names one (then the target
// writes its seeds in LLVMFuzzerInitialize and exits); empty otherwise. The committed corpora
// under tests/fuzz/corpus/ were made this way (docs/RELIABILITY.md).
inline std::string seed_dir() {
  const char* dir = std::getenv("TESSERA_FUZZ_MAKE_SEEDS");
  return dir == nullptr ? std::string() : std::string(dir);
}

}  // namespace tessera::fuzz
