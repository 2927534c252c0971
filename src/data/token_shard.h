// Token shards in llm.c's layout: a 256 x int32 header ([0] magic 20240520, [1] version: 1 =
// uint16 tokens, 2 = uint32 tokens, [2] token count), then the tokens, little-endian.
// TokenShard maps one read-only into memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace tessera::data {

constexpr int32_t kShardMagic = 20240520;
constexpr int kShardHeaderInts = 256;
constexpr int32_t kShardVersionU16 = 1;
constexpr int32_t kShardVersionU32 = 2;

// Writes `tokens` (each in [0, vocab_size)) as a shard at `path`: version 1 when vocab_size <=
// 65,535, else version 2. Written to `path`.tmp then renamed, so `path` is never half-written.
core::Status write_token_shard(const std::string& path, const std::vector<int32_t>& tokens,
                               int vocab_size);

// A read-only memory-mapped shard. Move-only; unmaps in the destructor. Reads are thread-safe.
class TokenShard {
 public:
  // Maps `path` and checks magic, version and that the length is header + count tokens exactly.
  static core::Result<TokenShard> open(const std::string& path);

  TokenShard(TokenShard&& other) noexcept;
  TokenShard& operator=(TokenShard&& other) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;
  ~TokenShard();

  int64_t size() const { return size_; }  // tokens
  int32_t version() const { return version_; }
  const std::string& path() const { return path_; }
  // Token i; precondition 0 <= i < size() (asserted).
  int32_t token(int64_t i) const;
  // Copies tokens [begin, begin + count) to out; precondition the range lies inside the shard.
  void copy(int64_t begin, int64_t count, int32_t* out) const;

 private:
  TokenShard() = default;
  void unmap();

  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const unsigned char* tokens_ = nullptr;  // first token, just past the header
  int64_t size_ = 0;
  int32_t version_ = 0;
};

}  // namespace tessera::data
