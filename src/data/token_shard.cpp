// llm.c-layout token shards: writing (atomic rename) and validated read-only memory mapping.
// The host is assumed little-endian, as llm.c's files are.
#include "data/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace tessera::data {
namespace {

constexpr int64_t kHeaderBytes = kShardHeaderInts * static_cast<int64_t>(sizeof(int32_t));

std::string shard_name(const std::string& path) { return "data file '" + path + "'"; }

}  // namespace

core::Status write_token_shard(const std::string& path, const std::vector<int32_t>& tokens,
                               int vocab_size) {
  const auto count = static_cast<int64_t>(tokens.size());
  if (count > INT32_MAX) {
    return core::Status::error(shard_name(path) + ": " + std::to_string(count) +
                               " tokens exceed the header's int32 count (2147483647); split the "
                               "input into several shards");
  }
  if (vocab_size <= 0) {
    return core::Status::error(shard_name(path) + ": vocab_size " + std::to_string(vocab_size) +
                               " must be positive");
  }
  for (int64_t i = 0; i < count; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab_size) {
      return core::Status::error(shard_name(path) + ": token " + std::to_string(i) + " is " +
                                 std::to_string(tokens[i]) + ", outside the vocabulary [0, " +
                                 std::to_string(vocab_size) +
                                 "); was it made by another tokenizer?");
    }
  }
  const int32_t version = vocab_size <= 65535 ? kShardVersionU16 : kShardVersionU32;
  std::vector<int32_t> header(kShardHeaderInts, 0);
  header[0] = kShardMagic;
  header[1] = version;
  header[2] = static_cast<int32_t>(count);

  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return core::Status::error("cannot create " + shard_name(tmp) + ": " + std::strerror(errno) +
                               "; check the directory exists and is writable");
  }
  bool ok = std::fwrite(header.data(), sizeof(int32_t), header.size(), f) == header.size();
  if (version == kShardVersionU16) {
    std::vector<uint16_t> narrow(tokens.begin(), tokens.end());
    ok = ok && std::fwrite(narrow.data(), sizeof(uint16_t), narrow.size(), f) == narrow.size();
  } else {
    ok = ok && std::fwrite(tokens.data(), sizeof(int32_t), tokens.size(), f) == tokens.size();
  }
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    return core::Status::error("cannot write " + shard_name(path) + ": " + why +
                               "; check free disk space and permissions");
  }
  return core::Status::ok();
}

core::Result<TokenShard> TokenShard::open(const std::string& path) {
  const std::string name = shard_name(path);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return core::Status::error(name + ": cannot open: " + std::strerror(errno) +
                               "; check the path (tessera-data prepare writes train.bin and "
                               "val.bin)");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    std::string why = std::strerror(errno);
    ::close(fd);
    return core::Status::error(name + ": cannot stat: " + why);
  }
  // A directory opens read-only and reports a size, then fails to map ("No such device"):
  // say what it is instead.
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return core::Status::error(name +
                               " is a directory, not a token file; give a .bin written "
                               "by tessera-data (prepare writes DIR/train.bin and "
                               "DIR/val.bin)");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return core::Status::error(name +
                               " is not a regular file (a device, pipe or socket); give "
                               "a .bin written by tessera-data");
  }
  const auto file_bytes = static_cast<int64_t>(st.st_size);
  if (file_bytes == 0) {
    ::close(fd);
    return core::Status::error(name +
                               " is empty (0 bytes), not a token file; regenerate it with "
                               "tessera-data");
  }
  if (file_bytes < kHeaderBytes) {
    ::close(fd);
    return core::Status::error(name + ": truncated: " + std::to_string(file_bytes) +
                               " bytes, shorter than the " + std::to_string(kHeaderBytes) +
                               "-byte header; regenerate it with tessera-data");
  }
  void* map = ::mmap(nullptr, static_cast<size_t>(file_bytes), PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) {
    return core::Status::error(name + ": cannot mmap " + std::to_string(file_bytes) +
                               " bytes: " + std::strerror(map_errno));
  }
  TokenShard shard;
  shard.path_ = path;
  shard.map_ = map;
  shard.map_bytes_ = static_cast<size_t>(file_bytes);  // unmapped by ~TokenShard on any error

  int32_t header[3];
  std::memcpy(header, map, sizeof(header));
  if (header[0] != kShardMagic) {
    return core::Status::error(name + ": bad magic " + std::to_string(header[0]) + " (expected " +
                               std::to_string(kShardMagic) +
                               "); is it a token shard written by tessera-data or llm.c?");
  }
  if (header[1] != kShardVersionU16 && header[1] != kShardVersionU32) {
    return core::Status::error(name + ": unsupported version " + std::to_string(header[1]) +
                               " (expected 1 for uint16 tokens or 2 for uint32 tokens); "
                               "regenerate it with tessera-data");
  }
  if (header[2] < 0) {
    return core::Status::error(name + ": negative token count " + std::to_string(header[2]) +
                               " in the header; the file is corrupt, regenerate it");
  }
  const int64_t width = header[1] == kShardVersionU16 ? 2 : 4;
  const int64_t expected = kHeaderBytes + width * header[2];
  if (file_bytes != expected) {
    return core::Status::error(
        name + ": " + (file_bytes < expected ? "truncated" : "has trailing bytes") +
        ": header says " + std::to_string(header[2]) + " tokens of " + std::to_string(width) +
        " bytes, so " + std::to_string(expected) + " bytes, but the file has " +
        std::to_string(file_bytes) + "; regenerate it with tessera-data");
  }
  ::madvise(map, shard.map_bytes_, MADV_RANDOM);  // the loader jumps between sequences
  shard.version_ = header[1];
  shard.size_ = header[2];
  shard.tokens_ = static_cast<const unsigned char*>(map) + kHeaderBytes;
  return shard;
}

TokenShard::TokenShard(TokenShard&& other) noexcept
    : path_(std::move(other.path_)),
      map_(std::exchange(other.map_, nullptr)),
      map_bytes_(std::exchange(other.map_bytes_, 0)),
      tokens_(std::exchange(other.tokens_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      version_(std::exchange(other.version_, 0)) {}

TokenShard& TokenShard::operator=(TokenShard&& other) noexcept {
  if (this != &other) {
    unmap();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    tokens_ = std::exchange(other.tokens_, nullptr);
    size_ = std::exchange(other.size_, 0);
    version_ = std::exchange(other.version_, 0);
  }
  return *this;
}

TokenShard::~TokenShard() { unmap(); }

void TokenShard::unmap() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
  tokens_ = nullptr;
}

int32_t TokenShard::token(int64_t i) const {
  TESSERA_ASSERT(i >= 0 && i < size_, "reading a token shard: index out of range");
  if (version_ == kShardVersionU16) {
    uint16_t v;
    std::memcpy(&v, tokens_ + 2 * i, sizeof(v));
    return v;
  }
  int32_t v;
  std::memcpy(&v, tokens_ + 4 * i, sizeof(v));
  return v;
}

void TokenShard::copy(int64_t begin, int64_t count, int32_t* out) const {
  TESSERA_ASSERT(begin >= 0 && count >= 0 && begin + count <= size_,
                 "reading a token shard: range out of bounds");
  if (count == 0) return;  // `out` may be an empty vector's null data(); memcpy's may not be
  if (version_ == kShardVersionU16) {
    for (int64_t i = 0; i < count; ++i) {
      uint16_t v;
      std::memcpy(&v, tokens_ + 2 * (begin + i), sizeof(v));
      out[i] = v;
    }
  } else {
    std::memcpy(out, tokens_ + 4 * begin, static_cast<size_t>(count) * sizeof(int32_t));
  }
}

}  // namespace tessera::data
