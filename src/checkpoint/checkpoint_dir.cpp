// Checkpoint directory management: step file names, the atomic `latest` pointer, keep-K pruning.
#include "checkpoint/checkpoint_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

#include "core/fault.h"
#include "core/log.h"

namespace tessera::checkpoint {
namespace fs = std::filesystem;

namespace {

constexpr const char* kLatest = "latest";

// The step of "step_<digits>.h5" (suffix ".h5"), or of "step_<digits>.h5.tmp" (suffix
// ".h5.tmp"); nullopt for any other name.
std::optional<int64_t> parse_step(const std::string& name, const std::string& suffix) {
  const std::string prefix = "step_";
  if (name.size() <= prefix.size() + suffix.size()) return std::nullopt;
  if (name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return std::nullopt;
  const std::string digits =
      name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() < 8 || digits.size() > 18) return std::nullopt;
  int64_t step = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    step = step * 10 + (c - '0');
  }
  return step;
}

std::string errno_text() { return std::strerror(errno); }

// Writes `text` to `path` durably: temp file, fsync, rename, fsync of the directory.
core::Status write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return core::Status::error("cannot create '" + tmp + "': " + errno_text() +
                               "; check that the checkpoint directory exists and is writable");
  }
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string why = errno_text();
      ::close(fd);
      return core::Status::error("cannot write '" + tmp + "': " + why + "; free disk space");
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    return core::Status::error("cannot sync '" + tmp + "': " + errno_text());
  }
  core::kill_point("latest-tmp");
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return core::Status::error("cannot rename '" + tmp + "' to '" + path + "': " + errno_text());
  }
  return sync_directory(fs::path(path).parent_path().string());
}

}  // namespace

core::Status sync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return core::Status::error("cannot open '" + path + "' to sync it: " + errno_text());
  const int rc = ::fsync(fd);
  const std::string why = rc != 0 ? errno_text() : "";
  ::close(fd);
  if (rc != 0) return core::Status::error("cannot sync '" + path + "': " + why);
  return core::Status::ok();
}

core::Status sync_directory(const std::string& dir) {
  const std::string d = dir.empty() ? "." : dir;
  const int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return core::Status::error("cannot open directory '" + d + "': " + errno_text());
  const int rc = ::fsync(fd);
  const std::string why = rc != 0 ? errno_text() : "";
  ::close(fd);
  // Some file systems cannot fsync a directory (EINVAL); the rename is then as durable as they
  // make it.
  if (rc != 0 && why != std::strerror(EINVAL)) {
    return core::Status::error("cannot sync directory '" + d + "': " + why);
  }
  return core::Status::ok();
}

std::string checkpoint_path(const std::string& dir, int64_t step) {
  char name[40];
  std::snprintf(name, sizeof(name), "step_%08lld.h5", static_cast<long long>(step));
  return (fs::path(dir) / name).string();
}

core::Status publish_latest(const std::string& dir, const std::string& path, int keep) {
  if (keep < 1) {
    return core::Status::error("checkpoint dir '" + dir + "': keep " + std::to_string(keep) +
                               " must be >= 1 (checkpoint.keep); e.g. 3");
  }
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    return core::Status::error("cannot publish '" + path + "' as the latest checkpoint of '" + dir +
                               "': the file does not exist; write_checkpoint must finish "
                               "(on every rank) before publish_latest");
  }
  // Name the file relative to dir when it lies there, so the directory can be moved whole.
  const fs::path file = fs::path(path);
  const fs::path parent =
      fs::weakly_canonical(file.parent_path().empty() ? "." : file.parent_path(), ec);
  const fs::path dir_canon = fs::weakly_canonical(dir, ec);
  const bool in_dir = !ec && parent == dir_canon;
  const std::string name = in_dir ? file.filename().string() : fs::absolute(file).string();
  TESSERA_RETURN_IF_ERROR(write_atomically((fs::path(dir) / kLatest).string(), name + "\n")
                              .with_context("checkpoint dir '" + dir + "': updating latest: "));

  core::kill_point("before-prune");

  // Prune: the newest `keep` step files stay (the published one always), older ones go; .tmp
  // leftovers of crashed writes below the published step go too.
  const std::optional<int64_t> published = in_dir ? parse_step(name, ".h5") : std::nullopt;
  std::vector<std::pair<int64_t, fs::path>> steps;
  std::vector<fs::path> stale_tmp;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (auto s = parse_step(n, ".h5")) {
      steps.push_back({*s, e.path()});
    } else if (auto t = parse_step(n, ".h5.tmp"); t && published && *t < *published) {
      stale_tmp.push_back(e.path());
    }
  }
  if (ec) {
    core::log_warn("checkpoint dir '" + dir +
                   "': cannot list it to delete old checkpoints: " + ec.message());
    return core::Status::ok();
  }
  std::sort(steps.begin(), steps.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<fs::path> doomed = stale_tmp;
  for (size_t i = static_cast<size_t>(keep); i < steps.size(); ++i) {
    if (in_dir && steps[i].second.filename() == file.filename()) continue;
    doomed.push_back(steps[i].second);
  }
  for (const fs::path& p : doomed) {
    std::error_code rm_ec;
    fs::remove(p, rm_ec);
    if (rm_ec) {
      core::log_warn("checkpoint dir '" + dir + "': cannot delete old checkpoint '" + p.string() +
                     "': " + rm_ec.message() + "; delete it by hand");
    }
  }
  return core::Status::ok();
}

core::Result<std::string> resolve_checkpoint(const std::string& dir, const std::string& spec) {
  std::error_code ec;
  if (spec != kLatest) {
    if (!fs::is_regular_file(spec, ec)) {
      return core::Status::error("checkpoint '" + spec +
                                 "' not found; give an existing checkpoint file, or 'latest' to "
                                 "resume from the newest one in checkpoint.dir");
    }
    return spec;
  }
  const fs::path latest = fs::path(dir) / kLatest;
  std::ifstream in(latest);
  if (!in) {
    return core::Status::error("checkpoint dir '" + dir +
                               "' has no 'latest' file (no checkpoint "
                               "was completed there); check checkpoint.dir, or start without "
                               "checkpoint.resume");
  }
  std::string name;
  std::getline(in, name);
  while (!name.empty() && (name.back() == '\r' || name.back() == ' ')) name.pop_back();
  if (name.empty()) {
    return core::Status::error("checkpoint dir '" + dir + "': '" + latest.string() +
                               "' is empty; delete it and resume from a checkpoint path");
  }
  // tessera-train writes one line, step_<8 digits>.h5; control bytes mean the file is damaged
  // (and would garble the message if printed).
  if (std::any_of(name.begin(), name.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    std::string newest = "step_<8 digits>.h5";
    int64_t newest_step = -1;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      const auto step = parse_step(entry.path().filename().string(), ".h5");
      if (step && *step > newest_step) {
        newest_step = *step;
        newest = entry.path().filename().string();
      }
    }
    return core::Status::error(
        "checkpoint dir '" + dir + "': '" + latest.string() +
        "' does not hold a checkpoint file name (binary bytes: a damaged "
        "file); delete it and resume from a checkpoint path, e.g. "
        "--set checkpoint.resume=" +
        (fs::path(dir) / newest).string() +
        (newest_step >= 0 ? " (the newest there; tessera-ckpt verify it)" : ""));
  }
  const fs::path target = fs::path(name).is_absolute() ? fs::path(name) : fs::path(dir) / name;
  if (!fs::is_regular_file(target, ec)) {
    return core::Status::error("checkpoint dir '" + dir + "': 'latest' names '" + name +
                               "', which does not exist (deleted or moved?); resume from an "
                               "existing checkpoint path instead");
  }
  return target.string();
}

}  // namespace tessera::checkpoint
