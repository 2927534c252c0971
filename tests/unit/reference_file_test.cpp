// Checks the committed PyTorch fidelity file (tests/data/gpt2_reference.bin) and its reader: every
// tensor present with the shape the config implies, the file's own numbers consistent, and
// corrupted copies rejected with a message naming the file.
#include "reference_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace tessera::testing {
namespace {

const std::string kRefPath = TESSERA_TEST_DATA_DIR "/gpt2_reference.bin";

struct RefConfig {
  int64_t V, Vp, maxT, L, NH, C, B, T;
};

RefConfig read_config(const ReferenceFile& ref) {
  const RefTensor& c = ref.get("config");
  EXPECT_EQ(c.dtype, kRefInt32);
  EXPECT_EQ(c.i.size(), 8u);
  if (c.i.size() != 8u) return {};
  return {c.i[0], c.i[1], c.i[2], c.i[3], c.i[4], c.i[5], c.i[6], c.i[7]};
}

// Parameter names and global shapes, in the order scripts/torch_gpt2.py's named_params() gives.
std::vector<std::pair<std::string, std::vector<int64_t>>> expected_params(const RefConfig& c) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out = {{"wte", {c.Vp, c.C}},
                                                                   {"wpe", {c.maxT, c.C}}};
  for (int64_t l = 0; l < c.L; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    out.push_back({p + "ln_1.weight", {c.C}});
    out.push_back({p + "ln_1.bias", {c.C}});
    out.push_back({p + "attn.qkv.weight", {3 * c.C, c.C}});
    out.push_back({p + "attn.qkv.bias", {3 * c.C}});
    out.push_back({p + "attn.proj.weight", {c.C, c.C}});
    out.push_back({p + "attn.proj.bias", {c.C}});
    out.push_back({p + "ln_2.weight", {c.C}});
    out.push_back({p + "ln_2.bias", {c.C}});
    out.push_back({p + "mlp.fc.weight", {4 * c.C, c.C}});
    out.push_back({p + "mlp.fc.bias", {4 * c.C}});
    out.push_back({p + "mlp.proj.weight", {c.C, 4 * c.C}});
    out.push_back({p + "mlp.proj.bias", {c.C}});
  }
  out.push_back({"ln_f.weight", {c.C}});
  out.push_back({"ln_f.bias", {c.C}});
  return out;
}

std::string temp_path(const std::string& tag) {
  return (std::filesystem::temp_directory_path() /
          ("tessera_ref_" + tag + "_" + std::to_string(::getpid()) + ".bin"))
      .string();
}

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "could not write " << path;
}

// Runs load(path), expects a std::runtime_error whose message names path and contains `needle`.
void expect_load_fails(const std::string& path, const std::string& needle) {
  try {
    ReferenceFile::load(path);
    ADD_FAILURE() << "load(" << path << ") succeeded; expected an error containing '" << needle
                  << "'";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "message lacks '" << needle << "': " << msg;
  }
}

TEST(ReferenceFile, ConfigMatchesEveryParameterAndGradientShape) {
  const ReferenceFile ref = ReferenceFile::load(kRefPath);
  const RefConfig c = read_config(ref);
  ASSERT_GT(c.V, 0);
  EXPECT_GE(c.Vp, c.V);
  ASSERT_GT(c.NH, 0);
  EXPECT_EQ(c.C % c.NH, 0) << "C=" << c.C << " NH=" << c.NH;
  EXPECT_LE(c.T, c.maxT);
  const bool has_final = ref.has("final.wte");
  for (const auto& [name, shape] : expected_params(c)) {
    ASSERT_TRUE(ref.has(name)) << name;
    EXPECT_EQ(ref.get(name).dims, shape) << name;
    EXPECT_EQ(ref.get(name).dtype, kRefFloat32) << name;
    EXPECT_EQ(ref.get(name).f.size(), static_cast<size_t>(ref.get(name).numel())) << name;
    ASSERT_TRUE(ref.has("grad." + name)) << name;
    EXPECT_EQ(ref.get("grad." + name).dims, shape) << "grad." << name;
    if (has_final) {
      EXPECT_EQ(ref.get("final." + name).dims, shape) << "final." << name;
    }
  }
  EXPECT_EQ(ref.get("tokens").dims, (std::vector<int64_t>{c.B, c.T}));
  EXPECT_EQ(ref.get("targets").dims, (std::vector<int64_t>{c.B, c.T}));
  EXPECT_EQ(ref.get("logits").dims, (std::vector<int64_t>{c.B, c.T, c.V}));
  EXPECT_EQ(ref.get("loss").dims, (std::vector<int64_t>{1}));
  EXPECT_EQ(ref.get("adamw.hparams").f.size(), 6u);
  EXPECT_EQ(ref.get("adamw.losses").f.size(), 10u);
  EXPECT_EQ(ref.get("adamw.grad_norms").f.size(), 10u);
  const size_t n_params = expected_params(c).size();
  const size_t n_fixed = 3 + 2 + 3;  // config tokens targets, logits loss, adamw.*
  EXPECT_EQ(ref.names().size(), n_fixed + n_params * (has_final ? 3 : 2));
}

TEST(ReferenceFile, PaddedEmbeddingRowsAndTheirGradientAreZero) {
  const ReferenceFile ref = ReferenceFile::load(kRefPath);
  const RefConfig c = read_config(ref);
  ASSERT_GT(c.Vp, c.V) << "the reference should exercise vocabulary padding";
  std::vector<std::string> names = {"wte", "grad.wte"};
  if (ref.has("final.wte")) names.push_back("final.wte");
  for (const std::string& name : names) {
    const std::vector<float>& w = ref.get(name).f;
    ASSERT_EQ(w.size(), static_cast<size_t>(c.Vp * c.C)) << name;
    for (int64_t row = c.V; row < c.Vp; ++row) {
      for (int64_t j = 0; j < c.C; ++j) {
        ASSERT_EQ(w[row * c.C + j], 0.0f) << name << "[" << row << ", " << j << "]";
      }
    }
  }
  // The real rows are not all zero, so the check above is not vacuous.
  const std::vector<float>& g = ref.get("grad.wte").f;
  EXPECT_TRUE(std::any_of(g.begin(), g.begin() + c.V * c.C, [](float x) { return x != 0.0f; }));
}

TEST(ReferenceFile, TargetsHoldExactlyOneIgnoredPositionAndTokensAreInVocabulary) {
  const ReferenceFile ref = ReferenceFile::load(kRefPath);
  const RefConfig c = read_config(ref);
  const RefTensor& targets = ref.get("targets");
  ASSERT_EQ(targets.dtype, kRefInt32);
  EXPECT_EQ(std::count(targets.i.begin(), targets.i.end(), -1), 1);
  for (int32_t t : targets.i) EXPECT_TRUE(t == -1 || (t >= 0 && t < c.V)) << t;
  for (int32_t t : ref.get("tokens").i) EXPECT_TRUE(t >= 0 && t < c.V) << t;
}

// The stored loss is the mean cross-entropy of the stored logits over non-ignored targets, and
// the first AdamW step starts from that same loss with the norm of the stored gradients.
TEST(ReferenceFile, LossAndFirstGradNormFollowFromStoredTensors) {
  const ReferenceFile ref = ReferenceFile::load(kRefPath);
  const RefConfig c = read_config(ref);
  const std::vector<float>& logits = ref.get("logits").f;
  const std::vector<int32_t>& targets = ref.get("targets").i;
  double sum = 0.0;
  int count = 0;
  for (int64_t bt = 0; bt < c.B * c.T; ++bt) {
    if (targets[bt] == -1) continue;
    const float* row = logits.data() + bt * c.V;
    double mx = row[0];
    for (int64_t v = 1; v < c.V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
    double z = 0.0;
    for (int64_t v = 0; v < c.V; ++v) z += std::exp(row[v] - mx);
    sum += std::log(z) + mx - row[targets[bt]];
    ++count;
  }
  const double loss = ref.get("loss").f.at(0);
  EXPECT_NEAR(sum / count, loss, 1e-5 * loss);
  EXPECT_NEAR(ref.get("adamw.losses").f.at(0), loss, 1e-6 * loss);

  double sq = 0.0;
  for (const auto& [name, shape] : expected_params(c)) {
    for (float g : ref.get("grad." + name).f) sq += static_cast<double>(g) * g;
  }
  const double norm0 = ref.get("adamw.grad_norms").f.at(0);
  EXPECT_NEAR(std::sqrt(sq), norm0, 1e-5 * norm0);
  // Training on one batch must make progress, else the ten-step golden test checks nothing.
  EXPECT_LT(ref.get("adamw.losses").f.back(), 0.8 * loss);
}

TEST(ReferenceFile, MissingTensorErrorNamesTensorAndFile) {
  const ReferenceFile ref = ReferenceFile::load(kRefPath);
  EXPECT_FALSE(ref.has("no.such.tensor"));
  try {
    ref.get("no.such.tensor");
    ADD_FAILURE() << "get() of a missing tensor did not throw";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("no.such.tensor"), std::string::npos) << msg;
    EXPECT_NE(msg.find(kRefPath), std::string::npos) << msg;
  }
}

TEST(ReferenceFile, CorruptedCopiesThrowNamingTheFile) {
  const std::vector<char> good = read_bytes(kRefPath);
  ASSERT_GT(good.size(), 100u);

  const std::string bad_magic = temp_path("bad_magic");
  std::vector<char> bytes = good;
  bytes[0] ^= 0x5a;
  write_bytes(bad_magic, bytes);
  expect_load_fails(bad_magic, "bad magic");

  const std::string bad_version = temp_path("bad_version");
  bytes = good;
  bytes[4] = 7;
  write_bytes(bad_version, bytes);
  expect_load_fails(bad_version, "version 7");

  const std::string truncated = temp_path("truncated");
  bytes.assign(good.begin(), good.end() - 3);
  write_bytes(truncated, bytes);
  expect_load_fails(truncated, "truncated");

  const std::string header_only = temp_path("header_only");
  bytes.assign(good.begin(), good.begin() + 10);
  write_bytes(header_only, bytes);
  expect_load_fails(header_only, "truncated");

  const std::string trailing = temp_path("trailing");
  bytes = good;
  bytes.push_back(0);
  write_bytes(trailing, bytes);
  expect_load_fails(trailing, "trailing");

  expect_load_fails(temp_path("does_not_exist"), "cannot open");

  for (const std::string& p : {bad_magic, bad_version, truncated, header_only, trailing}) {
    std::filesystem::remove(p);
  }
}

}  // namespace
}  // namespace tessera::testing
