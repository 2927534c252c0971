// tessera::Error and the one check-macro family for library calls (MPI, HDF5; CUDA, cuBLAS,
// cuDNN and NCCL add theirs in src/backends/cuda with the same generator). Every message says
// what we were doing, the call, the rank, file:line and the library's own string.
#pragma once

#include <stdexcept>
#include <string>

namespace tessera {

// Thrown for failures that are not the user's input (a library call failed, an invariant broke).
// Apps catch it in main, print it with the rank prefix and MPI_Abort.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace core {
// Builds and throws the Error for a failed check. `library` is "MPI", "HDF5", "CUDA"...
[[noreturn]] void throw_check_failure(const char* library, const char* call_text, const char* doing,
                                      const std::string& library_message, const char* file,
                                      int line);
std::string mpi_error_string(int code);
}  // namespace core
}  // namespace tessera

// The generator: `failed` is evaluated once on the call's result `rc_`; `describe` turns rc_
// into the library's message.
#define TESSERA_CHECK_GEN(library, call, doing, failed, describe)                                \
  do {                                                                                           \
    auto rc_ = (call);                                                                           \
    if (failed) {                                                                                \
      ::tessera::core::throw_check_failure(library, #call, doing, describe, __FILE__, __LINE__); \
    }                                                                                            \
  } while (0)

#define TESSERA_MPI_CHECK(call, doing) \
  TESSERA_CHECK_GEN("MPI", call, doing, rc_ != 0, ::tessera::core::mpi_error_string(rc_))

// HDF5 calls return a negative herr_t/hid_t on failure; the library's error stack is printed
// by HDF5 itself when its automatic error printing is on.
#define TESSERA_H5_CHECK(call, doing) \
  TESSERA_CHECK_GEN("HDF5", call, doing, rc_ < 0, std::string("HDF5 call returned an error"))

// Guards our own invariants in every build (never compiled out).
#define TESSERA_ASSERT(cond, doing)                                                       \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      ::tessera::core::throw_check_failure("invariant", #cond, doing, "assertion failed", \
                                           __FILE__, __LINE__);                           \
    }                                                                                     \
  } while (0)
