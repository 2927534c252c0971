// Config: defaults, every parse/override/validation error with its message (key, line,
// suggestion), the to_yaml round trip, the shipped configs/ files, and docs/CONFIG.md kept true.
#include "core/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace tessera::core {
namespace {

const std::string kSource = TESSERA_SOURCE_DIR;

Result<Config> parse(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return parse_config(text, "configs/x.yaml", overrides);
}

// The error message of a parse that must fail.
std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
  Result<Config> r = parse(text, overrides);
  EXPECT_FALSE(r.is_ok()) << "expected an error for:\n" << text;
  return r.status().message();
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "message: " << (haystack)

TEST(Config, EmptyDocumentGivesDefaults) {
  for (const char* text : {"", "# only a comment\n", "model:\ntrain:\n"}) {
    Result<Config> r = parse(text);
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    EXPECT_EQ(*r, Config{}) << "document: " << text;
  }
  EXPECT_TRUE(Config{}.validate().is_ok()) << Config{}.validate().message();
}

TEST(Config, ReadsEveryType) {
  Result<Config> r = parse(
      "model:\n  n_layer: 6\n  init_std: 1.5e-2\n"
      "train:\n  seed: 18446744073709551615\n  out_dir: out/run 1\n  timeline: ~\n"
      "optim:\n  lr: +2e-3\n  warmup_steps: -0\n"
      "parallel:\n  overlap: false\n  compress_bf16: true\n"
      "checkpoint:\n  dir: \"ckpt: a#b\"\n");
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r->model.n_layer, 6);
  EXPECT_EQ(r->model.init_std, 1.5e-2);
  EXPECT_EQ(r->train.seed, 18446744073709551615ull);
  EXPECT_EQ(r->train.out_dir, "out/run 1");
  EXPECT_EQ(r->train.timeline, "");
  EXPECT_EQ(r->optim.lr, 2e-3);
  EXPECT_EQ(r->optim.warmup_steps, 0);
  EXPECT_FALSE(r->parallel.overlap);
  EXPECT_TRUE(r->parallel.compress_bf16);
  EXPECT_EQ(r->checkpoint.dir, "ckpt: a#b");
  EXPECT_EQ(r->model.n_head, ModelConfig{}.n_head);  // untouched keys keep their defaults
}

TEST(Config, UnknownKeyNamesPathFileLineAndNearestKey) {
  std::string m = error_of(
      "# comment\n"
      "model:\n"
      "  n_layer: 4\n"
      "\n"
      "train:\n"
      "  steps: 10\n"
      "  sequence_len: 32\n");
  EXPECT_CONTAINS(m, "configs/x.yaml:7: unknown key 'train.sequence_len'");
  EXPECT_CONTAINS(m, "did you mean 'train.seq_len'?");
  EXPECT_CONTAINS(m, "docs/CONFIG.md");
}

TEST(Config, UnknownKeySuggestions) {
  EXPECT_CONTAINS(error_of("trian:\n  steps: 3\n"), "unknown key 'trian'; did you mean 'train'?");
  EXPECT_CONTAINS(error_of("model:\n  n_layers: 3\n"), "did you mean 'model.n_layer'?");
  // A key in the wrong section points to the right one.
  EXPECT_CONTAINS(error_of("train:\n  lr: 0.1\n"), "'train.lr'; did you mean 'optim.lr'?");
  EXPECT_CONTAINS(error_of("lr: 0.1\n"), "unknown key 'lr'; did you mean 'optim.lr'?");
  // Nothing close: no guess.
  std::string far = error_of("model:\n  colour_scheme: 3\n");
  EXPECT_CONTAINS(far, "configs/x.yaml:2: unknown key 'model.colour_scheme'");
  EXPECT_EQ(far.find("did you mean"), std::string::npos) << far;
}

TEST(Config, WrongTypeNamesKeyLineExpectationAndValue) {
  EXPECT_CONTAINS(error_of("model:\n  vocab_size: 4096\n\n\n  n_layer: four\n"),
                  "configs/x.yaml:5: key 'model.n_layer' expects an integer, got 'four'");
  EXPECT_CONTAINS(error_of("optim:\n  lr: fast\n"),
                  "configs/x.yaml:2: key 'optim.lr' expects a number, got 'fast'");
  EXPECT_CONTAINS(error_of("train:\n  seed: -1\n"),
                  "key 'train.seed' expects a non-negative integer, got '-1'");
  EXPECT_CONTAINS(error_of("model:\n  n_layer: [1, 2]\n"), "expects an integer, got a list");
  EXPECT_CONTAINS(error_of("model:\n  n_layer:\n    a: 1\n"), "expects an integer, got a map");
  EXPECT_CONTAINS(error_of("model:\n  n_layer:\n"), "expects an integer, got nothing");
  EXPECT_CONTAINS(error_of("train:\n  out_dir: [a]\n"), "expects a string, got a list");
}

TEST(Config, IntegersAreStrict) {
  EXPECT_CONTAINS(error_of("model:\n  n_layer: 3.5\n"),
                  "key 'model.n_layer' expects an integer, got '3.5' (not a whole number)");
  EXPECT_CONTAINS(error_of("model:\n  n_layer: 4.0\n"), "got '4.0'");
  EXPECT_CONTAINS(error_of("model:\n  n_layer: 1e3\n"), "got '1e3'");
  EXPECT_CONTAINS(error_of("model:\n  n_layer: 0x10\n"), "got '0x10'");
  EXPECT_CONTAINS(error_of("train:\n  steps: 3000000000\n"), "(out of range for an int)");
  EXPECT_CONTAINS(error_of("train:\n  seed: 18446744073709551616\n"), "train.seed");
}

TEST(Config, BoolsAcceptOnlyTrueAndFalse) {
  for (const char* bad : {"yes", "on", "1", "True", "y"}) {
    EXPECT_CONTAINS(error_of(std::string("parallel:\n  overlap: ") + bad + "\n"),
                    "key 'parallel.overlap' expects true or false, got '" + std::string(bad) + "'");
  }
  Result<Config> r = parse("parallel:\n  overlap: false\n");
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_FALSE(r->parallel.overlap);
}

TEST(Config, NumbersRejectNonFinite) {
  EXPECT_CONTAINS(error_of("optim:\n  lr: nan\n"), "key 'optim.lr' expects a number, got 'nan'");
  EXPECT_CONTAINS(error_of("optim:\n  lr: inf\n"), "got 'inf'");
  EXPECT_CONTAINS(error_of("optim:\n  lr: .inf\n"), "got '.inf'");
}

TEST(Config, SectionsMustBeMaps) {
  std::string m = error_of("model: 4\n");
  EXPECT_CONTAINS(m, "configs/x.yaml:1: section 'model' must be a map of keys, got '4'");
  EXPECT_CONTAINS(m, "e.g. '  arch: \"gpt2\"'");
  EXPECT_CONTAINS(error_of("data:\n  train: a\ntrain:\n  - steps\n"),
                  "configs/x.yaml:3: section 'train' must be a map of keys, got a list");
  EXPECT_CONTAINS(error_of("just a string\n"),
                  "configs/x.yaml:1: the top level must be a map of sections (model, data, "
                  "train, optim, parallel, checkpoint, serve), got 'just a string'");
  EXPECT_CONTAINS(error_of("- model\n- train\n"), "the top level must be a map");
}

TEST(Config, DuplicateKeysAreErrors) {
  EXPECT_CONTAINS(error_of("model:\n  n_layer: 4\n  n_head: 4\n  n_layer: 6\n"),
                  "configs/x.yaml:4: key 'model.n_layer' is given twice (lines 2 and 4)");
  EXPECT_CONTAINS(error_of("model:\n  n_layer: 4\ntrain:\n  steps: 1\nmodel:\n  n_head: 2\n"),
                  "key 'model' is given twice (lines 1 and 5)");
}

TEST(Config, YamlSyntaxErrorNamesFileLineAndColumn) {
  std::string m = error_of("model:\n  n_layer: 4\n  n_head: [1, 2\n");
  EXPECT_CONTAINS(m, "configs/x.yaml:4:");
  EXPECT_CONTAINS(m, "YAML syntax error");
  EXPECT_CONTAINS(error_of("model:\n  n_layer: 4: 5\n"), "configs/x.yaml:2:");
}

TEST(Config, OverridesApplyInOrderAfterTheFile) {
  Result<Config> r = parse("model:\n  n_layer: 2\n",
                           {"model.n_layer=6", "optim.lr=2e-3", "model.n_layer = 8",
                            "train.timeline=", "data.train=a.bin,b.bin", "parallel.overlap=false"});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r->model.n_layer, 8);
  EXPECT_EQ(r->optim.lr, 2e-3);
  EXPECT_EQ(r->train.timeline, "");
  EXPECT_EQ(r->data.train, "a.bin,b.bin");
  EXPECT_FALSE(r->parallel.overlap);
}

TEST(Config, OverrideErrorsNameTheOverrideAndTheFix) {
  EXPECT_CONTAINS(error_of("", {"train.steps"}),
                  "override 'train.steps': no '='; write it as key=value");
  EXPECT_CONTAINS(error_of("", {"=5"}), "override '=5': no key before '='");
  EXPECT_CONTAINS(error_of("", {"train.stepz=5"}),
                  "override 'train.stepz=5': unknown key 'train.stepz'; did you mean "
                  "'train.steps'?");
  EXPECT_CONTAINS(error_of("", {"model=5"}), "override 'model=5': unknown key 'model'");
  EXPECT_CONTAINS(error_of("", {"model.n_layer=four"}),
                  "override 'model.n_layer=four': key 'model.n_layer' expects an integer, got "
                  "'four'");
  EXPECT_CONTAINS(error_of("", {"model.n_layer=3.5"}), "got '3.5'");
  EXPECT_CONTAINS(error_of("", {"data.train=[a, b]"}),
                  "override 'data.train=[a, b]': key 'data.train' takes a single value, got a "
                  "list");
  EXPECT_CONTAINS(error_of("", {"data.train=[a"}), "is not valid YAML");
  // The first bad override stops the rest.
  EXPECT_CONTAINS(error_of("", {"model.n_layer=2", "optim.lrr=1"}), "'optim.lrr'");
}

// Each validation rule fires with the key and the fix; the input is otherwise the defaults.
TEST(Config, ValidateNamesKeyValueAndFix) {
  struct Case {
    std::vector<std::string> overrides;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{"model.arch=llama"}, "key 'model.arch' = \"llama\" is not an implemented architecture"},
      {{"model.vocab_size=0"}, "key 'model.vocab_size' = 0 must be > 0"},
      {{"model.pad_vocab_to=0"}, "key 'model.pad_vocab_to' = 0 must be > 0"},
      {{"model.max_seq_len=0"}, "key 'model.max_seq_len' = 0 must be > 0"},
      {{"model.n_layer=-1"}, "key 'model.n_layer' = -1 must be > 0; set it to a positive"},
      {{"model.n_head=0"}, "key 'model.n_head' = 0 must be > 0"},
      {{"model.n_embd=0"}, "key 'model.n_embd' = 0 must be > 0"},
      {{"model.n_head=3"},
       "key 'model.n_embd' = 128 is not divisible by model.n_head = 3; set model.n_embd to a "
       "multiple of model.n_head (126 or 129)"},
      {{"model.init_std=0"}, "key 'model.init_std' = 0.0 must be > 0"},
      {{"train.steps=0"}, "key 'train.steps' = 0 must be > 0"},
      {{"train.batch_size=0"}, "key 'train.batch_size' = 0 must be > 0"},
      {{"train.seq_len=0"}, "key 'train.seq_len' = 0 must be > 0"},
      {{"train.seq_len=512"},
       "key 'train.seq_len' = 512 exceeds model.max_seq_len = 256; lower train.seq_len or raise "
       "model.max_seq_len"},
      {{"train.micro_batch_size=-1"}, "key 'train.micro_batch_size' = -1 must be >= 0"},
      {{"train.micro_batch_size=32"},
       "key 'train.micro_batch_size' = 32 exceeds train.batch_size = 16"},
      {{"train.val_every=-1"}, "key 'train.val_every' = -1 must be >= 0"},
      {{"train.val_batches=0"}, "key 'train.val_batches' = 0 must be > 0 when train.val_every"},
      {{"train.log_every=0"}, "key 'train.log_every' = 0 must be > 0"},
      {{"train.threads=-2"}, "key 'train.threads' = -2 must be >= 0"},
      {{"train.dtype=fp16"}, "key 'train.dtype' = \"fp16\" is not a dtype; use fp32 or bf16"},
      {{"train.device=tpu"}, "key 'train.device' = \"tpu\" is not a device; use cpu or cuda"},
      {{"optim.lr=0"}, "key 'optim.lr' = 0.0 must be > 0"},
      {{"optim.lr=-1e-3"}, "key 'optim.lr' = -0.001 must be > 0"},
      {{"optim.min_lr=-1"}, "key 'optim.min_lr' = -1.0 must be in [0, optim.lr = 0.001]"},
      {{"optim.min_lr=0.01"}, "key 'optim.min_lr' = 0.01 must be in [0, optim.lr = 0.001]"},
      {{"optim.warmup_steps=-5"}, "key 'optim.warmup_steps' = -5 must be >= 0"},
      {{"optim.schedule=linear"},
       "key 'optim.schedule' = \"linear\" is not a schedule; use cosine or constant"},
      {{"optim.weight_decay=-0.1"}, "key 'optim.weight_decay' = -0.1 must be >= 0"},
      {{"optim.beta1=1"}, "key 'optim.beta1' = 1.0 must be in [0, 1)"},
      {{"optim.beta2=-0.5"}, "key 'optim.beta2' = -0.5 must be in [0, 1)"},
      {{"optim.eps=0"}, "key 'optim.eps' = 0.0 must be > 0"},
      {{"optim.grad_clip=-1"}, "key 'optim.grad_clip' = -1.0 must be >= 0"},
      {{"optim.zero=2"}, "key 'optim.zero' = 2 is not a ZeRO stage; use 0"},
      {{"optim.zero=1", "parallel.compress_bf16=true"},
       "key 'optim.zero' = 1 does not combine with parallel.compress_bf16 yet"},
      {{"parallel.tp=0"}, "key 'parallel.tp' = 0 must be >= 1"},
      {{"parallel.bucket_mb=0"}, "key 'parallel.bucket_mb' = 0.0 must be > 0"},
      {{"parallel.sparse_embedding=yes"},
       "key 'parallel.sparse_embedding' = \"yes\" is not a sparse-embedding mode; use auto, on or "
       "off"},
      {{"parallel.collective_timeout_s=-1"},
       "key 'parallel.collective_timeout_s' = -1.0 must be >= 0; 300 is usual; use 0 to turn the "
       "stalled-rank watchdog off"},
      {{"checkpoint.keep=0"}, "key 'checkpoint.keep' = 0 must be >= 1"},
      {{"checkpoint.transfers=async"},
       "key 'checkpoint.transfers' = \"async\" is not a transfer mode; use independent (the "
       "default) "
       "or collective"},
      {{"checkpoint.every=-1"}, "key 'checkpoint.every' = -1 must be >= 0"},
      {{"checkpoint.resume=latest"},
       "key 'checkpoint.resume' = \"latest\" needs checkpoint.dir to look in"},
  };
  for (const Case& c : cases) {
    std::string m = error_of("", c.overrides);
    EXPECT_CONTAINS(m, "configs/x.yaml (with --set overrides): " + c.expected);
  }
  // The same values written in the file: the message names the file, not the overrides.
  EXPECT_CONTAINS(error_of("train:\n  steps: 0\n"), "configs/x.yaml: key 'train.steps' = 0");
  // Boundaries that are allowed.
  Result<Config> ok = parse(
      "", {"optim.min_lr=0", "optim.beta1=0", "optim.grad_clip=0", "train.val_every=0",
           "train.val_batches=0", "train.seq_len=256", "optim.min_lr=0.001", "train.dtype=bf16",
           "train.device=cuda", "checkpoint.dir=ck", "checkpoint.resume=latest"});
  EXPECT_TRUE(ok.is_ok()) << ok.status().message();
}

TEST(Config, ToYamlRoundTrips) {
  Config c;
  c.model.n_layer = 7;
  c.model.init_std = 0.1 + 0.2;  // not exactly 0.3: needs every digit
  c.data.train = "a \"quoted\" path: with # and \\ and\ttab";
  c.data.val = "true";       // a string that looks like a bool
  c.data.tokenizer = "123";  // ... and like a number
  c.train.seed = 18446744073709551615ull;
  c.train.timeline = "";
  c.train.out_dir = "out/ünïcode";
  c.optim.lr = 3e-3;
  c.optim.min_lr = 1.0 / 3.0 * 1e-4;
  c.optim.eps = 1e-12;
  c.parallel.bucket_mb = 25.0;
  c.parallel.overlap = false;
  c.checkpoint.dir = "ck";
  c.checkpoint.resume = "latest";
  ASSERT_TRUE(c.validate().is_ok()) << c.validate().message();
  std::string text = c.to_yaml();
  Result<Config> back = parse_config(text, "to_yaml", {});
  ASSERT_TRUE(back.is_ok()) << back.status().message() << "\n" << text;
  EXPECT_EQ(*back, c) << text;
  EXPECT_EQ(back->to_yaml(), text);
  // Every section and key is written.
  for (const ConfigKeyInfo& k : config_keys()) {
    std::string leaf = k.key.substr(k.key.find('.') + 1);
    EXPECT_CONTAINS(text, "\n  " + leaf + ": ");
  }
  Result<Config> defaults = parse_config(Config{}.to_yaml(), "defaults", {});
  ASSERT_TRUE(defaults.is_ok()) << defaults.status().message();
  EXPECT_EQ(*defaults, Config{});
}

TEST(Config, KeyTableListsEveryFieldOnce) {
  std::vector<ConfigKeyInfo> keys = config_keys();
  EXPECT_EQ(keys.size(), 61u);  // update with config.h when a field is added
  for (size_t i = 0; i < keys.size(); ++i) {
    for (size_t j = i + 1; j < keys.size(); ++j) EXPECT_NE(keys[i].key, keys[j].key);
  }
  // Every key can be overridden with its own default.
  std::vector<std::string> overrides;
  for (const ConfigKeyInfo& k : keys) overrides.push_back(k.key + "=" + k.default_value);
  Result<Config> r = parse("", overrides);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(*r, Config{});
}

TEST(Config, MissingFileListsTheDirectory) {
  Result<Config> r = load_config(kSource + "/configs/tnyy.yaml", {});
  ASSERT_FALSE(r.is_ok());
  const std::string m = r.status().message();
  EXPECT_CONTAINS(m, "config file '" + kSource + "/configs/tnyy.yaml' not found");
  EXPECT_CONTAINS(m, "did you mean '" + kSource + "/configs/tiny.yaml'?");
  EXPECT_CONTAINS(m, "gpt2-124m.yaml, gpt2-350m.yaml, gpt3-1.3b.yaml, serve.yaml, tiny.yaml");
  r = load_config(kSource + "/no_such_dir/tiny.yaml", {});
  ASSERT_FALSE(r.is_ok());
  EXPECT_CONTAINS(r.status().message(), "does not exist either");
  r = load_config(kSource + "/configs", {});
  ASSERT_FALSE(r.is_ok());
  EXPECT_CONTAINS(r.status().message(), "is a directory");
}

TEST(Config, LoadConfigReportsTheFilePath) {
  const std::string path =
      (std::filesystem::temp_directory_path() / "tessera_config_test_bad.yaml").string();
  {
    std::ofstream out(path);
    out << "model:\n  n_layer: 2\ntrain:\n  stepz: 3\n";
  }
  Result<Config> r = load_config(path, {});
  std::filesystem::remove(path);
  ASSERT_FALSE(r.is_ok());
  EXPECT_CONTAINS(r.status().message(), path +
                                            ":4: unknown key 'train.stepz'; did you mean "
                                            "'train.steps'?");
}

TEST(Config, ShippedConfigsLoadAndValidate) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kSource + "/configs")) {
    if (entry.path().extension() != ".yaml") continue;
    ++count;
    Result<Config> r = load_config(entry.path().string(), {});
    ASSERT_TRUE(r.is_ok()) << entry.path() << ": " << r.status().message();
    EXPECT_TRUE(r->validate().is_ok()) << entry.path();
  }
  EXPECT_GE(count, 3);

  Result<Config> tiny = load_config(kSource + "/configs/tiny.yaml", {});
  ASSERT_TRUE(tiny.is_ok()) << tiny.status().message();
  EXPECT_EQ(tiny->model.vocab_size, 4096);
  EXPECT_EQ(tiny->model.padded_vocab_size(), 4096);
  EXPECT_EQ(tiny->model.max_seq_len, 128);
  EXPECT_EQ(tiny->model.n_layer, 4);
  EXPECT_EQ(tiny->model.n_embd, 128);
  EXPECT_EQ(tiny->train.steps, 600);
  EXPECT_EQ(tiny->train.seq_len, 64);
  EXPECT_EQ(tiny->optim.lr, 3e-3);
  EXPECT_EQ(tiny->data.tokenizer, "out/tiny/data/tokenizer");

  Result<Config> small = load_config(kSource + "/configs/gpt2-124m.yaml", {"parallel.tp=2"});
  ASSERT_TRUE(small.is_ok()) << small.status().message();
  EXPECT_EQ(small->model.padded_vocab_size(), 50304);
  EXPECT_EQ(small->model.n_layer, 12);
  EXPECT_EQ(small->optim.lr, 6e-4);
  EXPECT_EQ(small->parallel.tp, 2);

  Result<Config> medium = load_config(kSource + "/configs/gpt2-350m.yaml", {});
  ASSERT_TRUE(medium.is_ok()) << medium.status().message();
  EXPECT_EQ(medium->model.n_layer, 24);
  EXPECT_EQ(medium->model.n_head, 16);
  EXPECT_EQ(medium->model.n_embd, 1024);
  EXPECT_EQ(medium->optim.lr, 3e-4);

  Result<Config> serve = load_config(kSource + "/configs/serve.yaml", {"serve.max_queue=8"});
  ASSERT_TRUE(serve.is_ok()) << serve.status().message();
  ServeConfig defaults_but_queue;
  defaults_but_queue.max_queue = 8;
  EXPECT_EQ(serve->serve, defaults_but_queue) << "serve.yaml spells out the defaults";
  Config only_serve;
  only_serve.serve = serve->serve;
  EXPECT_EQ(*serve, only_serve) << "serve.yaml holds only the serve section";
}

// The serve section's rules name the key, the value and the fix.
TEST(Config, ServeKeysAreChecked) {
  EXPECT_CONTAINS(error_of("serve:\n  max_queue: 0\n"),
                  "key 'serve.max_queue' = 0 must be >= 1; a request that finds every slot busy");
  EXPECT_CONTAINS(error_of("serve:\n  max_sequences: 0\n"), "key 'serve.max_sequences' = 0");
  EXPECT_CONTAINS(error_of("serve:\n  kv_cache_mb: -1\n"),
                  "key 'serve.kv_cache_mb' = -1.0 must be >= 0");
  EXPECT_CONTAINS(error_of("serve:\n  max_prefill_tokens: -1\n"),
                  "key 'serve.max_prefill_tokens' = -1 must be >= 0; give the prompt tokens");
  EXPECT_CONTAINS(error_of("serve:\n  port: 70000\n"),
                  "key 'serve.port' = 70000 is not a TCP port; pick 1-65535, or 0");
  EXPECT_CONTAINS(error_of("serve:\n  device: tpu\n"), "key 'serve.device' = \"tpu\" is not a");
  EXPECT_CONTAINS(error_of("serve:\n  tp: -2\n"), "key 'serve.tp' = -2 must be >= 0");
  EXPECT_CONTAINS(error_of("serve:\n  threads: -1\n"), "key 'serve.threads' = -1");
  EXPECT_CONTAINS(error_of("serve:\n  host: \"\"\n"), "key 'serve.host' = \"\" is empty");
  EXPECT_CONTAINS(error_of("serve:\n  max_queu: 3\n"),
                  "unknown key 'serve.max_queu'; did you mean 'serve.max_queue'?");
}

// docs/CONFIG.md has one table row per key: | `section.key` | type | `default` | meaning |.
// Each key of the field table must have its row, with the type and default the code has.
TEST(Config, DocsListEveryKeyWithTypeAndDefault) {
  std::ifstream in(kSource + "/docs/CONFIG.md");
  ASSERT_TRUE(in) << "docs/CONFIG.md is missing";
  std::vector<std::vector<std::string>> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("| `", 0) != 0) continue;
    std::vector<std::string> cells;
    std::stringstream ss(line.substr(1));
    std::string cell;
    while (std::getline(ss, cell, '|')) {
      size_t b = cell.find_first_not_of(" `"), e = cell.find_last_not_of(" `");
      cells.push_back(b == std::string::npos ? "" : cell.substr(b, e - b + 1));
    }
    rows.push_back(cells);
  }
  std::vector<ConfigKeyInfo> keys = config_keys();
  for (const ConfigKeyInfo& k : keys) {
    int found = 0;
    for (const auto& cells : rows) {
      if (cells.empty() || cells[0] != k.key) continue;
      ++found;
      ASSERT_GE(cells.size(), 4u) << k.key;
      EXPECT_EQ(cells[1], k.type) << "docs/CONFIG.md type of " << k.key;
      EXPECT_EQ(cells[2], k.default_value) << "docs/CONFIG.md default of " << k.key;
      EXPECT_FALSE(cells[3].empty()) << "docs/CONFIG.md meaning of " << k.key;
    }
    EXPECT_EQ(found, 1) << k.key << " must have exactly one row in docs/CONFIG.md";
  }
  // And no row documents a key the code does not have.
  for (const auto& cells : rows) {
    bool known = false;
    for (const ConfigKeyInfo& k : keys) known = known || (!cells.empty() && cells[0] == k.key);
    EXPECT_TRUE(known) << "docs/CONFIG.md documents unknown key '" << cells[0] << "'";
  }
}

}  // namespace
}  // namespace tessera::core
