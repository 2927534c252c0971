// A per-process scratch directory for tests, removed when the test program exits.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace tessera::testing {

inline const std::filesystem::path& scratch_dir() {
  struct Scratch {
    std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                ("tessera_unit_test_" + std::to_string(::getpid()));
    Scratch() { std::filesystem::create_directories(dir); }
    ~Scratch() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  };
  static const Scratch scratch;
  return scratch.dir;
}

// A path inside the scratch directory.
inline std::string temp_path(const std::string& name) { return (scratch_dir() / name).string(); }

}  // namespace tessera::testing
