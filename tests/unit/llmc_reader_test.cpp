// The llm.c model-file reader of tessera-ckpt convert (checkpoint/convert.h): a header whose
// sizes the file cannot hold is refused at once with a message, never sized into tables; a
// valid file still converts. Regression tests of tests/fuzz/llmc_fuzz.cpp's findings.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "checkpoint/convert.h"
#include "core/config.h"
#include "models/gpt.h"
#include "scratch_dir.h"

namespace tessera::checkpoint {
namespace {

// An llm.c file: the header words `sizes` (maxT, V, L, NH, C, Vp) and `elements` parameters.
std::string write_llmc(const std::string& name, int32_t version, std::vector<int32_t> sizes,
                       int64_t elements) {
  std::vector<int32_t> header(kLlmcHeaderWords, 0);
  header[0] = kLlmcMagic;
  header[1] = version;
  std::memcpy(&header[2], sizes.data(), sizes.size() * 4);
  const std::string path = testing::temp_path(name);
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header.data()), kLlmcHeaderWords * 4);
  const std::vector<char> zeros(static_cast<size_t>(elements) *
                                (version == kLlmcVersionF32 ? 4 : 2));
  out.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
  return path;
}

int64_t parameter_count(int maxT, int V, int L, int NH, int C, int Vp) {
  core::ModelConfig m;
  m.max_seq_len = maxT;
  m.vocab_size = V;
  m.n_layer = L;
  m.n_head = NH;
  m.n_embd = C;
  m.pad_vocab_to = Vp;
  int64_t count = 0;
  for (const auto& spec : models::Gpt::param_specs(m))
    count += core::shape_numel(spec.global_shape);
  return count;
}

core::Result<ConvertReport> convert_to_llmc(const std::string& in) {
  ConvertOptions options;
  options.to = ConvertTarget::kLlmc;
  options.overwrite = true;
  return convert_checkpoint(in, in + ".out.bin", options);
}

// llmc_fuzz found this: 65,536 layers of width 262,144 claimed by a 1,571-byte file. The reader
// built the layer table and looked each name up in it (quadratic), which never ended.
TEST(LlmcReader, HeaderSizesTheFileCannotHoldAreRefusedAtOnce) {
  const std::string path =
      write_llmc("huge.bin", kLlmcVersionBf16, {4, 266, 65536, 131072, 262144, 1048576}, 273);
  const auto start = std::chrono::steady_clock::now();
  auto report = convert_to_llmc(path);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(report.is_ok());
  EXPECT_NE(report.status().message().find("too few for its header's sizes"), std::string::npos)
      << report.status().message();
  EXPECT_NE(report.status().message().find("L 65536"), std::string::npos);
  EXPECT_LT(seconds, 5.0) << "the refusal must not depend on the claimed sizes";
}

TEST(LlmcReader, IntMaxSizesAreRefusedWithoutOverflow) {
  const int32_t big = 2147483647;
  for (const std::vector<int32_t>& sizes :
       {std::vector<int32_t>{4, big, 1, 1, 4, big}, {big, 8, 1, 1, big, 8}, {4, 8, big, 1, 4, 8}}) {
    auto report = convert_to_llmc(write_llmc("big.bin", kLlmcVersionF32, sizes, 16));
    ASSERT_FALSE(report.is_ok());
    EXPECT_NE(report.status().message().find("too few for its header's sizes"), std::string::npos)
        << report.status().message();
  }
}

TEST(LlmcReader, ValidFileConvertsAndOneElementShortIsTruncated) {
  const int64_t n = parameter_count(4, 10, 2, 2, 4, 16);
  auto ok = convert_to_llmc(write_llmc("ok.bin", kLlmcVersionF32, {4, 10, 2, 2, 4, 16}, n));
  ASSERT_TRUE(ok.is_ok()) << ok.status().message();
  EXPECT_EQ(ok->elements, n);
  auto short_file =
      convert_to_llmc(write_llmc("short.bin", kLlmcVersionF32, {4, 10, 2, 2, 4, 16}, n - 1));
  ASSERT_FALSE(short_file.is_ok());
  EXPECT_NE(short_file.status().message().find("truncated"), std::string::npos)
      << short_file.status().message();
}

}  // namespace
}  // namespace tessera::checkpoint
