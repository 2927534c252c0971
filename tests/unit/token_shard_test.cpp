// Token shards: llm.c header layout for both token widths, and every way a file can be wrong
// (bad magic, bad version, truncated, trailing bytes, missing) with the message it gives.
#include "data/token_shard.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "scratch_dir.h"

namespace tessera::data {
namespace {

using tessera::testing::temp_path;

// Writes a raw file: a 256-int header with the given first three words, then `payload` bytes.
void write_raw(const std::string& path, int32_t magic, int32_t version, int32_t count,
               size_t payload_bytes) {
  std::vector<int32_t> header(256, 0);
  header[0] = magic;
  header[1] = version;
  header[2] = count;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(header.data()), 1024);
  std::string payload(payload_bytes, '\0');
  out.write(payload.data(), static_cast<std::streamsize>(payload.size()));
}

std::vector<int32_t> read_header(const std::string& path) {
  std::vector<int32_t> header(256);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(header.data()), 1024);
  return header;
}

TEST(TokenShard, WritesAndReadsVersion1WithUint16Tokens) {
  const std::string path = temp_path("v1.bin");
  const std::vector<int32_t> tokens = {0, 1, 65534, 7, 50256};
  ASSERT_TRUE(write_token_shard(path, tokens, 65535).is_ok());
  std::vector<int32_t> header = read_header(path);
  EXPECT_EQ(header[0], 20240520);
  EXPECT_EQ(header[1], 1);
  EXPECT_EQ(header[2], 5);
  EXPECT_EQ(std::filesystem::file_size(path), 1024u + 2 * tokens.size());

  core::Result<TokenShard> shard = TokenShard::open(path);
  ASSERT_TRUE(shard.is_ok()) << shard.status().message();
  EXPECT_EQ(shard->version(), 1);
  ASSERT_EQ(shard->size(), 5);
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(shard->token(i), tokens[i]);
  std::vector<int32_t> range(3);
  shard->copy(2, 3, range.data());
  EXPECT_EQ(range, (std::vector<int32_t>{65534, 7, 50256}));
}

TEST(TokenShard, WritesAndReadsVersion2WithUint32Tokens) {
  const std::string path = temp_path("v2.bin");
  const std::vector<int32_t> tokens = {69999, 0, 65536, 65535};
  ASSERT_TRUE(write_token_shard(path, tokens, 70000).is_ok());
  std::vector<int32_t> header = read_header(path);
  EXPECT_EQ(header[0], 20240520);
  EXPECT_EQ(header[1], 2);
  EXPECT_EQ(header[2], 4);
  EXPECT_EQ(std::filesystem::file_size(path), 1024u + 4 * tokens.size());

  core::Result<TokenShard> shard = TokenShard::open(path);
  ASSERT_TRUE(shard.is_ok()) << shard.status().message();
  EXPECT_EQ(shard->version(), 2);
  ASSERT_EQ(shard->size(), 4);
  std::vector<int32_t> all(4);
  shard->copy(0, 4, all.data());
  EXPECT_EQ(all, tokens);
}

TEST(TokenShard, EmptyShardAndMoveKeepTheMapping) {
  const std::string path = temp_path("empty.bin");
  ASSERT_TRUE(write_token_shard(path, {}, 50257).is_ok());
  core::Result<TokenShard> empty = TokenShard::open(path);
  ASSERT_TRUE(empty.is_ok()) << empty.status().message();
  EXPECT_EQ(empty->size(), 0);

  const std::string path2 = temp_path("move.bin");
  ASSERT_TRUE(write_token_shard(path2, {5, 6, 7}, 50257).is_ok());
  core::Result<TokenShard> opened = TokenShard::open(path2);
  ASSERT_TRUE(opened.is_ok());
  TokenShard a = std::move(opened).value();
  TokenShard b = std::move(a);
  EXPECT_EQ(a.size(), 0);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  EXPECT_EQ(b.size(), 3);
  EXPECT_EQ(b.token(2), 7);
  b = std::move(empty).value();
  EXPECT_EQ(b.size(), 0);
}

// tests/fuzz/token_shard_fuzz.cpp found that copying the tokens of an empty uint32 shard into
// an empty vector passed memcpy its null data() (undefined, stopped by UBSan in the sanitizer
// build). Both widths: copying nothing touches nothing.
TEST(TokenShard, CopyingNoTokensIntoAnEmptyVectorIsANoOp) {
  for (int vocab : {50257, 100000}) {
    const std::string path = temp_path("empty_copy.bin");
    ASSERT_TRUE(write_token_shard(path, {}, vocab).is_ok());
    core::Result<TokenShard> shard = TokenShard::open(path);
    ASSERT_TRUE(shard.is_ok()) << shard.status().message();
    EXPECT_EQ(shard->version(), vocab > 65535 ? kShardVersionU32 : kShardVersionU16);
    std::vector<int32_t> none;
    shard->copy(0, 0, none.data());
    EXPECT_TRUE(none.empty());
  }
}

TEST(TokenShard, WriteRejectsTokensOutsideTheVocabulary) {
  const std::string path = temp_path("oov.bin");
  core::Status st = write_token_shard(path, {1, 2, 5}, 5);
  ASSERT_FALSE(st.is_ok());
  EXPECT_EQ(st.message(), "data file '" + path +
                              "': token 2 is 5, outside the vocabulary [0, 5); was it made by "
                              "another tokenizer?");
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(TokenShard, RejectsBadMagic) {
  const std::string path = temp_path("magic.bin");
  write_raw(path, 12345, 1, 0, 0);
  core::Result<TokenShard> shard = TokenShard::open(path);
  ASSERT_FALSE(shard.is_ok());
  EXPECT_EQ(shard.status().message(),
            "data file '" + path +
                "': bad magic 12345 (expected 20240520); is it a token shard written by "
                "tessera-data or llm.c?");
}

TEST(TokenShard, RejectsBadVersion) {
  const std::string path = temp_path("version.bin");
  write_raw(path, 20240520, 7, 0, 0);
  core::Result<TokenShard> shard = TokenShard::open(path);
  ASSERT_FALSE(shard.is_ok());
  EXPECT_EQ(shard.status().message(),
            "data file '" + path +
                "': unsupported version 7 (expected 1 for uint16 tokens or 2 for uint32 "
                "tokens); regenerate it with tessera-data");
}

TEST(TokenShard, RejectsTruncatedFiles) {
  const std::string path = temp_path("short.bin");
  write_raw(path, 20240520, 1, 10, 10);  // 10 tokens promised, 5 present
  core::Result<TokenShard> shard = TokenShard::open(path);
  ASSERT_FALSE(shard.is_ok());
  EXPECT_EQ(shard.status().message(),
            "data file '" + path +
                "': truncated: header says 10 tokens of 2 bytes, so 1044 bytes, but the file "
                "has 1034; regenerate it with tessera-data");

  const std::string tiny = temp_path("tiny.bin");
  std::ofstream(tiny, std::ios::binary) << "0123456789";
  core::Result<TokenShard> headerless = TokenShard::open(tiny);
  ASSERT_FALSE(headerless.is_ok());
  EXPECT_EQ(headerless.status().message(),
            "data file '" + tiny +
                "': truncated: 10 bytes, shorter than the 1024-byte header; regenerate it with "
                "tessera-data");

  const std::string extra = temp_path("extra.bin");
  write_raw(extra, 20240520, 2, 1, 6);
  core::Result<TokenShard> trailing = TokenShard::open(extra);
  ASSERT_FALSE(trailing.is_ok());
  EXPECT_NE(trailing.status().message().find("has trailing bytes: header says 1 tokens of 4 "
                                             "bytes, so 1028 bytes, but the file has 1030"),
            std::string::npos)
      << trailing.status().message();
}

TEST(TokenShard, RejectsMissingFile) {
  core::Result<TokenShard> shard = TokenShard::open("/nonexistent/train.bin");
  ASSERT_FALSE(shard.is_ok());
  EXPECT_EQ(shard.status().message(),
            "data file '/nonexistent/train.bin': cannot open: No such file or directory; check "
            "the path (tessera-data prepare writes train.bin and val.bin)");
}

}  // namespace
}  // namespace tessera::data
