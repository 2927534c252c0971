// The safetensors reader and writer: a written file reads back (F32 exactly, BF16 rounded, F16
// widened exactly), and each malformed header or file is refused with an error naming the file,
// the tensor and what is wrong. Test files are a few bytes, written here.
#include "checkpoint/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/hf_gpt2.h"
#include "core/bf16.h"
#include "core/config.h"
#include "models/gpt.h"
#include "scratch_dir.h"

namespace tessera::checkpoint {
namespace {

using testing::temp_path;

// Writes an 8-byte little-endian `length` (default: the header's size), the header text and
// `data` bytes.
std::string write_raw(const std::string& name, const std::string& header,
                      const std::vector<uint8_t>& data, int64_t length = -1) {
  const std::string path = temp_path(name);
  std::ofstream out(path, std::ios::binary);
  uint64_t n = length < 0 ? header.size() : static_cast<uint64_t>(length);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xFF));
  out << header;
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  return path;
}

// Bytes of float32 values.
std::vector<uint8_t> f32_bytes(const std::vector<float>& values) {
  std::vector<uint8_t> out(values.size() * 4);
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// The error message of opening `path` (empty when it opens).
std::string open_error(const std::string& path) {
  auto r = SafetensorsReader::open(path);
  return r ? std::string() : r.status().message();
}

TEST(Safetensors, WrittenFileReadsBackWithItsHeader) {
  const std::string path = temp_path("ok.safetensors");
  std::vector<SafetensorsTensor> layout = {{"b", "F32", {2, 3}}, {"a", "BF16", {3}}};
  auto w = SafetensorsWriter::create(path, layout, {{"format", "pt"}, {"note", "x"}});
  ASSERT_TRUE(w) << w.status().message();
  const std::vector<float> b = {1.0f, -2.5f, 0.1f, 3e-8f, -0.0f, 65504.0f};
  const std::vector<float> a = {1.0f, 0.1f, -3.14159f};
  ASSERT_TRUE(w->write("b", b.data(), 6).is_ok());
  ASSERT_TRUE(w->write("a", a.data(), 3).is_ok());
  ASSERT_TRUE(w->close().is_ok());

  auto r = SafetensorsReader::open(path);
  ASSERT_TRUE(r) << r.status().message();
  ASSERT_EQ(r->tensors().size(), 2u);
  const SafetensorsTensor* tb = r->find("b");
  ASSERT_NE(tb, nullptr);
  EXPECT_EQ(tb->dtype, "F32");
  EXPECT_EQ(tb->shape, (core::Shape{2, 3}));
  EXPECT_EQ(tb->begin, 0u);  // offsets in the order given to create()
  EXPECT_EQ(tb->end, 24u);
  EXPECT_EQ(r->find("a")->begin, 24u);
  EXPECT_EQ(r->metadata().at("format"), "pt");
  EXPECT_EQ(r->metadata().at("note"), "x");
  std::vector<float> got;
  ASSERT_TRUE(r->read_f32("b", &got).is_ok());
  ASSERT_EQ(got.size(), b.size());
  EXPECT_EQ(std::memcmp(got.data(), b.data(), 24), 0);  // bitwise, -0.0 included
  ASSERT_TRUE(r->read_f32("a", &got).is_ok());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(got[i], core::from_bf16(core::to_bf16(a[i])));
  EXPECT_NE(got[1], a[1]);  // 0.1 is not a bfloat16: it was rounded

  // The data start 8-byte aligned (header padded with spaces).
  std::ifstream in(path, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);
}

TEST(Safetensors, ReadsF16Exactly) {
  // 1.0, -2.0, 65504 (largest half), 2^-24 (smallest subnormal), 48 * 2^-24 (a subnormal), -inf.
  const std::vector<uint16_t> half = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x0030, 0xFC00};
  std::vector<uint8_t> data(half.size() * 2);
  std::memcpy(data.data(), half.data(), data.size());
  const std::string path = write_raw(
      "f16.safetensors", R"({"h":{"dtype":"F16","shape":[6],"data_offsets":[0,12]}})", data);
  auto r = SafetensorsReader::open(path);
  ASSERT_TRUE(r) << r.status().message();
  std::vector<float> got;
  ASSERT_TRUE(r->read_f32("h", &got).is_ok());
  EXPECT_EQ(got, (std::vector<float>{1.0f, -2.0f, 65504.0f, std::ldexp(1.0f, -24),
                                     48 * std::ldexp(1.0f, -24), -INFINITY}));
}

TEST(Safetensors, RefusesTruncatedFile) {
  const std::string path =
      write_raw("trunc.safetensors", R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                f32_bytes({1, 2, 3}));
  const std::string e = open_error(path);
  EXPECT_NE(e.find(path), std::string::npos) << e;
  EXPECT_NE(e.find("tensor 'x' has data_offsets [0, 16] ending past the 12 data bytes"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  EXPECT_NE(open_error(write_raw("short.safetensors", "", {1, 2, 3}, 0)).find("cannot hold"),
            std::string::npos);
  // Fewer than 8 bytes in all.
  const std::string tiny = temp_path("tiny.safetensors");
  std::ofstream(tiny) << "abc";
  EXPECT_NE(open_error(tiny).find("is 3 bytes, shorter than the 8-byte header length"),
            std::string::npos)
      << open_error(tiny);
}

TEST(Safetensors, RefusesHeaderLengthBeyondTheFile) {
  const std::string header = R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  std::string e = open_error(write_raw("long.safetensors", header, f32_bytes({1}), 5000));
  EXPECT_NE(e.find("header length 5000 runs past the end of the file"), std::string::npos) << e;
  e = open_error(write_raw("huge.safetensors", header, f32_bytes({1}), int64_t{1} << 40));
  EXPECT_NE(e.find("exceeds the 100 MiB limit"), std::string::npos) << e;
}

TEST(Safetensors, RefusesOverlappingOffsets) {
  const std::string e =
      open_error(write_raw("overlap.safetensors",
                           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                           f32_bytes({1, 2, 3})));
  EXPECT_NE(e.find("tensors 'a' [0, 8] and 'b' [4, 12] overlap"), std::string::npos) << e;
}

TEST(Safetensors, RefusesHolesAndTrailingBytes) {
  std::string e = open_error(write_raw("hole.safetensors",
                                       R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                                       f32_bytes({1, 2, 3})));
  EXPECT_NE(e.find("data bytes [4, 8) belong to no tensor"), std::string::npos) << e;
  e = open_error(write_raw("trail.safetensors",
                           R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                           f32_bytes({1, 2})));
  EXPECT_NE(e.find("holds 4 bytes after its last tensor"), std::string::npos) << e;
}

TEST(Safetensors, RefusesShapeThatDoesNotMatchItsBytes) {
  const std::string e = open_error(
      write_raw("shape.safetensors", R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})",
                f32_bytes({1, 2, 3, 4})));
  EXPECT_NE(e.find("tensor 'w' of shape (2, 3) and dtype F32 needs 24 bytes, but its "
                   "data_offsets [0, 16] span 16"),
            std::string::npos)
      << e;
  EXPECT_NE(open_error(write_raw("neg.safetensors",
                                 R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
                                 f32_bytes({1})))
                .find("dimensions must be non-negative integers"),
            std::string::npos);
}

TEST(Safetensors, RefusesUnknownDtype) {
  const std::string e = open_error(
      write_raw("dtype.safetensors", R"({"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})",
                f32_bytes({1})));
  EXPECT_NE(e.find("tensor 'w' has dtype 'F33', which the safetensors format does not define"),
            std::string::npos)
      << e;
}

TEST(Safetensors, RefusesBadJsonAndMetadata) {
  EXPECT_NE(
      open_error(write_raw("json.safetensors", R"({"w": [1, 2)", {})).find("not a JSON object"),
      std::string::npos);
  EXPECT_NE(open_error(write_raw("meta.safetensors", R"({"__metadata__":{"step":3}})", {}))
                .find("__metadata__ entry 'step' is not a string"),
            std::string::npos);
  EXPECT_NE(open_error(write_raw("keys.safetensors", R"({"w":{"dtype":"F32","shape":[1]}})",
                                 f32_bytes({1})))
                .find("tensor 'w' lacks dtype, shape or data_offsets"),
            std::string::npos);
}

TEST(Safetensors, ReadNamesMissingTensorAndNonFloatDtype) {
  std::vector<uint8_t> data(8, 0);
  const std::string path = write_raw(
      "int.safetensors", R"({"i":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", data);
  auto r = SafetensorsReader::open(path);
  ASSERT_TRUE(r) << r.status().message();
  std::vector<float> got;
  core::Status st = r->read_f32("missing", &got);
  EXPECT_NE(st.message().find("tensor 'missing' is missing"), std::string::npos) << st.message();
  st = r->read_f32("i", &got);
  EXPECT_NE(st.message().find("tensor 'i' has dtype I64; weights must be F32, BF16, F16 or F64"),
            std::string::npos)
      << st.message();
}

TEST(Safetensors, WriterRefusesOutOfOrderAndShortTensors) {
  auto w = SafetensorsWriter::create(temp_path("order.safetensors"),
                                     {{"a", "F32", {2}}, {"b", "F32", {1}}}, {});
  ASSERT_TRUE(w);
  const float x[2] = {1, 2};
  EXPECT_FALSE(w->write("b", x, 1).is_ok());  // a comes first
  EXPECT_FALSE(w->write("a", x, 1).is_ok());  // a holds 2
  ASSERT_TRUE(w->write("a", x, 2).is_ok());
  EXPECT_NE(w->close().message().find("tensor 'b' and later ones were never written"),
            std::string::npos);
  EXPECT_FALSE(SafetensorsWriter::create(temp_path("i64.safetensors"), {{"a", "I64", {1}}}, {}));
}

// The Hugging Face names and shapes of every Tessera parameter of a small GPT-2: Conv1D weights
// transposed, wte cut to the real vocabulary.
TEST(HfGpt2, NamesAndShapes) {
  core::ModelConfig m;
  m.vocab_size = 100;
  m.pad_vocab_to = 64;
  m.max_seq_len = 16;
  m.n_layer = 1;
  m.n_head = 2;
  m.n_embd = 8;
  std::map<std::string, std::pair<std::string, core::Shape>> got;
  for (const params::ParamSpec& spec : models::Gpt::param_specs(m)) {
    got[spec.name] = {hf_gpt2_name(spec.name).name, hf_gpt2_shape(spec, m)};
  }
  using P = std::pair<std::string, core::Shape>;
  EXPECT_EQ(got["wte"], (P{"transformer.wte.weight", {100, 8}}));  // 128 rows in Tessera
  EXPECT_EQ(got["wpe"], (P{"transformer.wpe.weight", {16, 8}}));
  EXPECT_EQ(got["h.0.attn.qkv.weight"], (P{"transformer.h.0.attn.c_attn.weight", {8, 24}}));
  EXPECT_EQ(got["h.0.attn.qkv.bias"], (P{"transformer.h.0.attn.c_attn.bias", {24}}));
  EXPECT_EQ(got["h.0.attn.proj.weight"], (P{"transformer.h.0.attn.c_proj.weight", {8, 8}}));
  EXPECT_EQ(got["h.0.mlp.fc.weight"], (P{"transformer.h.0.mlp.c_fc.weight", {8, 32}}));
  EXPECT_EQ(got["h.0.mlp.proj.weight"], (P{"transformer.h.0.mlp.c_proj.weight", {32, 8}}));
  EXPECT_EQ(got["h.0.ln_2.bias"], (P{"transformer.h.0.ln_2.bias", {8}}));
  EXPECT_EQ(got["ln_f.weight"], (P{"transformer.ln_f.weight", {8}}));
  EXPECT_TRUE(hf_gpt2_name("h.0.attn.proj.weight").transposed);
  EXPECT_FALSE(hf_gpt2_name("h.0.attn.proj.bias").transposed);
  EXPECT_FALSE(hf_gpt2_name("wte").transposed);
}

}  // namespace
}  // namespace tessera::checkpoint
