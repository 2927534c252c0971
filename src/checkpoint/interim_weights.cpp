// The interim weights file; see interim_weights.h.
#include "checkpoint/interim_weights.h"

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <vector>

#include "core/error.h"
#include "parallel/communicator.h"

namespace tessera::checkpoint {
namespace {
constexpr uint32_t kMagic = 0x57535254;
constexpr uint32_t kVersion = 1;

template <typename T>
void put(std::ofstream& f, const T& v) {
  f.write(reinterpret_cast<const char*>(&v), sizeof(T));
}
template <typename T>
bool get(std::ifstream& f, T& v) {
  return static_cast<bool>(f.read(reinterpret_cast<char*>(&v), sizeof(T)));
}

// Opens `path` and reads past the header, leaving the stream at the parameter count.
core::Status open_and_read_header(const std::string& path, std::ifstream& f, std::string& yaml) {
  f.open(path, std::ios::binary);
  if (!f) {
    return core::Status::error("weights file '" + path +
                               "' not found or unreadable; check the path (tessera-train writes "
                               "<train.out_dir>/model.tsw)");
  }
  uint32_t magic = 0, version = 0;
  uint64_t yaml_bytes = 0;
  if (!get(f, magic) || magic != kMagic) {
    return core::Status::error("weights file '" + path +
                               "': bad magic (not a Tessera weights file); pass a file written "
                               "by tessera-train");
  }
  if (!get(f, version) || version != kVersion) {
    return core::Status::error("weights file '" + path + "': format version " +
                               std::to_string(version) + " is not supported (expected " +
                               std::to_string(kVersion) + ")");
  }
  if (!get(f, yaml_bytes) || yaml_bytes > (64u << 20)) {
    return core::Status::error("weights file '" + path + "': truncated or corrupt header");
  }
  yaml.resize(yaml_bytes);
  if (!f.read(yaml.data(), static_cast<std::streamsize>(yaml_bytes))) {
    return core::Status::error("weights file '" + path + "': truncated in its config text");
  }
  return core::Status::ok();
}
}  // namespace

// The whole tensor of parameter i: this rank's shard at tp = 1, else gathered over tp (every
// tp rank calls; the result is meaningful on tp rank 0).
static std::vector<float> whole_tensor(const models::Gpt& model, int i) {
  const models::ParamSet& ps = model.param_set();
  const models::ParamSpec& s = ps.specs()[i];
  const float* local = ps.view(model.weights(), i).f32();
  const int64_t n_local = ps.local_numel(i);
  if (s.replicated() || ps.tp_size() == 1) return std::vector<float>(local, local + n_local);
  const int tp = ps.tp_size();
  std::vector<float> gathered(n_local * tp), whole(n_local * tp);
  model.tp_comm()->all_gather(gathered.data(), local, n_local);
  for (int r = 0; r < tp; ++r) {
    for (int64_t j = 0; j < n_local; ++j)
      whole[s.global_index(j, r, tp)] = gathered[r * n_local + j];
  }
  return whole;
}

core::Status save_interim_weights(const std::string& path, const models::Gpt& model,
                                  const core::Config& config) {
  const models::ParamSet& ps = model.param_set();
  const bool writer = ps.tp_rank() == 0;
  const std::string tmp = path + ".tmp";
  std::ofstream f;
  bool open_failed = false;
  if (writer) {
    f.open(tmp, std::ios::binary | std::ios::trunc);
    open_failed = !f;
  }
  if (!open_failed && writer) {
    const std::string yaml = config.to_yaml();
    put(f, kMagic);
    put(f, kVersion);
    put(f, static_cast<uint64_t>(yaml.size()));
    f.write(yaml.data(), static_cast<std::streamsize>(yaml.size()));
    put(f, static_cast<uint32_t>(ps.size()));
  }
  for (int i = 0; i < ps.size(); ++i) {
    const std::vector<float> whole = whole_tensor(model, i);  // collective: every tp rank
    if (!writer || open_failed) continue;
    const models::ParamSpec& s = ps.specs()[i];
    put(f, static_cast<uint32_t>(s.name.size()));
    f.write(s.name.data(), static_cast<std::streamsize>(s.name.size()));
    put(f, static_cast<uint32_t>(s.global_shape.size()));
    for (int64_t d : s.global_shape) put(f, d);
    f.write(reinterpret_cast<const char*>(whole.data()),
            static_cast<std::streamsize>(whole.size() * sizeof(float)));
  }
  if (!writer) return core::Status::ok();
  if (open_failed) {
    return core::Status::error("cannot write weights file '" + tmp +
                               "'; check that the directory exists and is writable");
  }
  f.flush();
  if (!f) return core::Status::error("writing weights file '" + tmp + "' failed (disk full?)");
  f.close();
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return core::Status::error("renaming '" + tmp + "' to '" + path + "' failed");
  }
  return core::Status::ok();
}

core::Result<core::Config> read_interim_config(const std::string& path) {
  std::ifstream f;
  std::string yaml;
  TESSERA_RETURN_IF_ERROR(open_and_read_header(path, f, yaml));
  auto config = core::parse_config(yaml, path, {});
  if (!config) return config.status().with_context("weights file '" + path + "': stored config: ");
  return config;
}

core::Status load_interim_weights(const std::string& path, models::Gpt& model) {
  std::ifstream f;
  std::string yaml;
  TESSERA_RETURN_IF_ERROR(open_and_read_header(path, f, yaml));
  const models::ParamSet& ps = model.param_set();
  uint32_t count = 0;
  if (!get(f, count) || count != static_cast<uint32_t>(ps.size())) {
    return core::Status::error("weights file '" + path + "' holds " + std::to_string(count) +
                               " parameters, the model has " + std::to_string(ps.size()) +
                               "; the file was written for another model config");
  }
  std::vector<float> whole;
  for (int i = 0; i < ps.size(); ++i) {
    const models::ParamSpec& s = ps.specs()[i];
    uint32_t name_bytes = 0, ndim = 0;
    if (!get(f, name_bytes) || name_bytes > 4096) {
      return core::Status::error("weights file '" + path + "' is truncated at parameter " +
                                 std::to_string(i));
    }
    std::string name(name_bytes, '\0');
    f.read(name.data(), name_bytes);
    core::Shape shape;
    if (!get(f, ndim) || ndim > 8) {
      return core::Status::error("weights file '" + path + "' is corrupt at parameter " + name);
    }
    shape.resize(ndim);
    for (auto& d : shape) get(f, d);
    if (name != s.name || shape != s.global_shape) {
      return core::Status::error(
          "weights file '" + path + "': parameter " + std::to_string(i) + " is " + name + " " +
          core::shape_string(shape) + ", the model expects " + s.name + " " +
          core::shape_string(s.global_shape) + "; the file was written for another model config");
    }
    whole.resize(core::shape_numel(shape));
    if (!f.read(reinterpret_cast<char*>(whole.data()),
                static_cast<std::streamsize>(whole.size() * sizeof(float)))) {
      return core::Status::error("weights file '" + path + "' is truncated in parameter " + name);
    }
    float* local = ps.view(model.weights(), i).f32();
    for (int64_t j = 0; j < ps.local_numel(i); ++j) {
      local[j] = whole[s.global_index(j, ps.tp_rank(), ps.tp_size())];
    }
  }
  return core::Status::ok();
}

}  // namespace tessera::checkpoint
