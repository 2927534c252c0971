// Bad data files are one-line errors naming the file and the fix, never a crash or a raw library
// message: a directory, an empty file or one shorter than the header given as a token shard; a
// directory, malformed JSON or garbage given as a tokenizer file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/token_shard.h"
#include "data/tokenizer.h"
#include "scratch_dir.h"

namespace tessera::data {
namespace {

using tessera::testing::temp_path;

void write(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// Expects an error holding every one of `words`, on one line.
template <typename R>
void expect_error_with(const R& result, const std::vector<std::string>& words) {
  ASSERT_FALSE(result.is_ok()) << "expected an error holding '" << words.front() << "'";
  const std::string m = result.status().message();
  for (const std::string& w : words) {
    EXPECT_NE(m.find(w), std::string::npos) << "'" << w << "' not in: " << m;
  }
  EXPECT_EQ(m.find('\n'), std::string::npos) << "not one line: " << m;
  EXPECT_EQ(m.find('\r'), std::string::npos) << "not one line: " << m;
}

TEST(BadDataFiles, DirectoryAsTokenShard) {
  const std::string dir = temp_path("shard_dir");
  std::filesystem::create_directories(dir);
  expect_error_with(TokenShard::open(dir), {"'" + dir + "' is a directory, not a token file",
                                            "give a .bin written by tessera-data"});
}

TEST(BadDataFiles, EmptyAndShortTokenShards) {
  const std::string empty = temp_path("empty.bin");
  write(empty, "");
  expect_error_with(TokenShard::open(empty),
                    {"'" + empty + "' is empty (0 bytes)", "regenerate it with tessera-data"});
  const std::string shorter = temp_path("short.bin");
  write(shorter, std::string(100, '\0'));
  expect_error_with(TokenShard::open(shorter),
                    {"'" + shorter + "'", "100 bytes, shorter than the 1024-byte header",
                     "regenerate it with tessera-data"});
}

// A valid tokenizer to break one file of: the 256 bytes and <|endoftext|>.
std::string save_byte_tokenizer(const std::string& name) {
  const std::string prefix = temp_path(name);
  Tokenizer tok = Tokenizer::train("", 257);
  EXPECT_TRUE(tok.save_prefix(prefix).is_ok());
  return prefix;
}

TEST(BadDataFiles, DirectoryAsTokenizerFile) {
  const std::string prefix = save_byte_tokenizer("dir_merges");
  std::filesystem::remove(prefix + ".merges.txt");
  std::filesystem::create_directories(prefix + ".merges.txt");
  expect_error_with(Tokenizer::load_prefix(prefix),
                    {"'" + prefix + ".merges.txt' is a directory", "vocab.json"});
  const std::string vprefix = save_byte_tokenizer("dir_vocab");
  std::filesystem::remove(vprefix + ".vocab.json");
  std::filesystem::create_directories(vprefix + ".vocab.json");
  expect_error_with(Tokenizer::load_prefix(vprefix),
                    {"'" + vprefix + ".vocab.json' is a directory"});
}

TEST(BadDataFiles, MalformedVocabularyJson) {
  const std::string prefix = save_byte_tokenizer("bad_json");
  write(prefix + ".vocab.json", "{\"a\": 1,");
  expect_error_with(Tokenizer::load_prefix(prefix),
                    {"tokenizer vocabulary '" + prefix + ".vocab.json' is not valid JSON",
                     "expected GPT-2's vocab.json"});
  write(prefix + ".vocab.json", "[1, 2, 3]");
  expect_error_with(Tokenizer::load_prefix(prefix),
                    {"'" + prefix + ".vocab.json' is not a non-empty JSON object"});
  write(prefix + ".vocab.json", "{\"a\": \"x\"}");
  expect_error_with(Tokenizer::load_prefix(prefix), {"token \"a\" has id \"x\"", "integers"});
  // Binary garbage: the quoted bytes are escaped, the message stays one line.
  std::string garbage;
  for (int i = 0; i < 600; ++i) garbage.push_back(static_cast<char>((i * 151 + 7) % 256));
  write(prefix + ".vocab.json", garbage);
  expect_error_with(Tokenizer::load_prefix(prefix), {"'" + prefix + ".vocab.json'"});
  // A key with a control character outside the byte alphabet is quoted escaped.
  write(prefix + ".vocab.json", "{\"a\\nb\": 0}");
  expect_error_with(Tokenizer::load_prefix(prefix), {"token \"a\\x0Ab\"", "byte alphabet"});
}

TEST(BadDataFiles, MalformedMerges) {
  const std::string prefix = save_byte_tokenizer("bad_merges");
  std::string garbage = "#version: 0.2\n";
  for (int i = 0; i < 400; ++i) garbage.push_back(static_cast<char>(0x80 + (i * 37) % 128));
  garbage += "\n";
  write(prefix + ".merges.txt", garbage);
  expect_error_with(Tokenizer::load_prefix(prefix),
                    {"tokenizer merges '" + prefix + ".merges.txt' line 2",
                     "is not two tokens separated by one space", "\"\\x80\\x"});
  write(prefix + ".merges.txt", "#version: 0.2\n\x01\r\x02 x\n");
  expect_error_with(Tokenizer::load_prefix(prefix),
                    {"line 2: token \"\\x01\\x0D\\x02\" is not in"});
  write(prefix + ".merges.txt", "#version: 0.2\nzz qq\n");
  expect_error_with(Tokenizer::load_prefix(prefix),
                    {"merges '" + prefix + ".merges.txt' line 2", "token \"zz\" is not in",
                     "are the vocab and merges files a pair?"});
}

}  // namespace
}  // namespace tessera::data
