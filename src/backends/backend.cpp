// make_backend: the one place a run's device name becomes a Backend.
#include "backends/backend.h"

#include <string>

#include "backends/cpu/cpu_backend.h"
#include "backends/cuda_factory.h"

namespace tessera::backends {

namespace {

// The backends' messages say "train.device"; an app with a --device flag gets its own name.
core::Status renamed(const core::Status& status, const std::string& option) {
  std::string text = status.message();
  const std::string key = "train.device";
  for (size_t at = text.find(key); at != std::string::npos; at = text.find(key, at)) {
    text.replace(at, key.size(), option);
    at += option.size();
  }
  return core::Status::error(text);
}

}  // namespace

core::Result<std::unique_ptr<Backend>> make_backend(const std::string& device, int local_rank,
                                                    int local_size, const std::string& option) {
  if (device == "cpu") return std::unique_ptr<Backend>(std::make_unique<CpuBackend>());
  if (device == "cuda") {
    auto backend = make_cuda_backend(local_rank, local_size);
    if (!backend && option != "train.device") return renamed(backend.status(), option);
    return backend;
  }
  return core::Status::error(option + " '" + device + "' is not a backend; use cpu or cuda");
}

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

}  // namespace tessera::backends
