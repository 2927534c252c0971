// YAML config: one field table (key path -> typed member) drives parsing, `--set` overrides,
// to_yaml and the key list docs/CONFIG.md is tested against, so no key is spelled twice.
// Lines in messages are 1-based (yaml-cpp marks are 0-based).
#include "core/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <system_error>
#include <variant>

#include "core/error.h"

namespace tessera::core {
namespace {

// A pointer to one field of a Config; its alternative is the field's type.
using FieldRef = std::variant<int*, uint64_t*, double*, bool*, std::string*>;

struct Field {
  const char* key;           // "section.name"
  FieldRef (*ref)(Config&);  // locates the field in a Config
};

template <auto Section, auto Member>
FieldRef field_ref(Config& config) {
  return &(config.*Section.*Member);
}

template <auto Section, auto Member>
constexpr Field field(const char* key) {
  return Field{key, &field_ref<Section, Member>};
}

// The field table, in the order to_yaml writes and docs/CONFIG.md lists. Sections appear in
// the order of their first field.
const std::vector<Field>& fields() {
  static const std::vector<Field> kFields = {
      field<&Config::model, &ModelConfig::arch>("model.arch"),
      field<&Config::model, &ModelConfig::vocab_size>("model.vocab_size"),
      field<&Config::model, &ModelConfig::pad_vocab_to>("model.pad_vocab_to"),
      field<&Config::model, &ModelConfig::max_seq_len>("model.max_seq_len"),
      field<&Config::model, &ModelConfig::n_layer>("model.n_layer"),
      field<&Config::model, &ModelConfig::n_head>("model.n_head"),
      field<&Config::model, &ModelConfig::n_embd>("model.n_embd"),
      field<&Config::model, &ModelConfig::init_std>("model.init_std"),
      field<&Config::data, &DataConfig::train>("data.train"),
      field<&Config::data, &DataConfig::val>("data.val"),
      field<&Config::data, &DataConfig::tokenizer>("data.tokenizer"),
      field<&Config::train, &TrainConfig::seed>("train.seed"),
      field<&Config::train, &TrainConfig::steps>("train.steps"),
      field<&Config::train, &TrainConfig::batch_size>("train.batch_size"),
      field<&Config::train, &TrainConfig::micro_batch_size>("train.micro_batch_size"),
      field<&Config::train, &TrainConfig::seq_len>("train.seq_len"),
      field<&Config::train, &TrainConfig::val_every>("train.val_every"),
      field<&Config::train, &TrainConfig::val_batches>("train.val_batches"),
      field<&Config::train, &TrainConfig::log_every>("train.log_every"),
      field<&Config::train, &TrainConfig::out_dir>("train.out_dir"),
      field<&Config::train, &TrainConfig::timeline>("train.timeline"),
      field<&Config::train, &TrainConfig::dtype>("train.dtype"),
      field<&Config::train, &TrainConfig::device>("train.device"),
      field<&Config::train, &TrainConfig::threads>("train.threads"),
      field<&Config::train, &TrainConfig::init_from>("train.init_from"),
      field<&Config::train, &TrainConfig::skip_nonfinite>("train.skip_nonfinite"),
      field<&Config::optim, &OptimConfig::lr>("optim.lr"),
      field<&Config::optim, &OptimConfig::min_lr>("optim.min_lr"),
      field<&Config::optim, &OptimConfig::warmup_steps>("optim.warmup_steps"),
      field<&Config::optim, &OptimConfig::schedule>("optim.schedule"),
      field<&Config::optim, &OptimConfig::weight_decay>("optim.weight_decay"),
      field<&Config::optim, &OptimConfig::beta1>("optim.beta1"),
      field<&Config::optim, &OptimConfig::beta2>("optim.beta2"),
      field<&Config::optim, &OptimConfig::eps>("optim.eps"),
      field<&Config::optim, &OptimConfig::grad_clip>("optim.grad_clip"),
      field<&Config::optim, &OptimConfig::zero>("optim.zero"),
      field<&Config::parallel, &ParallelConfig::tp>("parallel.tp"),
      field<&Config::parallel, &ParallelConfig::bucket_mb>("parallel.bucket_mb"),
      field<&Config::parallel, &ParallelConfig::overlap>("parallel.overlap"),
      field<&Config::parallel, &ParallelConfig::compress_bf16>("parallel.compress_bf16"),
      field<&Config::parallel, &ParallelConfig::sparse_embedding>("parallel.sparse_embedding"),
      field<&Config::parallel, &ParallelConfig::node_shared>("parallel.node_shared"),
      field<&Config::parallel, &ParallelConfig::sequence_parallel>("parallel.sequence_parallel"),
      field<&Config::parallel, &ParallelConfig::collective_timeout_s>(
          "parallel.collective_timeout_s"),
      field<&Config::checkpoint, &CheckpointConfig::dir>("checkpoint.dir"),
      field<&Config::checkpoint, &CheckpointConfig::every>("checkpoint.every"),
      field<&Config::checkpoint, &CheckpointConfig::keep>("checkpoint.keep"),
      field<&Config::checkpoint, &CheckpointConfig::resume>("checkpoint.resume"),
      field<&Config::checkpoint, &CheckpointConfig::transfers>("checkpoint.transfers"),
      field<&Config::serve, &ServeConfig::host>("serve.host"),
      field<&Config::serve, &ServeConfig::port>("serve.port"),
      field<&Config::serve, &ServeConfig::max_sequences>("serve.max_sequences"),
      field<&Config::serve, &ServeConfig::max_queue>("serve.max_queue"),
      field<&Config::serve, &ServeConfig::kv_cache_mb>("serve.kv_cache_mb"),
      field<&Config::serve, &ServeConfig::max_prefill_tokens>("serve.max_prefill_tokens"),
      field<&Config::serve, &ServeConfig::prefix_cache>("serve.prefix_cache"),
      field<&Config::serve, &ServeConfig::tp>("serve.tp"),
      field<&Config::serve, &ServeConfig::device>("serve.device"),
      field<&Config::serve, &ServeConfig::tokenizer>("serve.tokenizer"),
      field<&Config::serve, &ServeConfig::model_name>("serve.model_name"),
      field<&Config::serve, &ServeConfig::threads>("serve.threads"),
  };
  return kFields;
}

std::string section_of(const std::string& key) { return key.substr(0, key.find('.')); }
std::string leaf_of(const std::string& key) {
  size_t dot = key.find('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

std::vector<std::string> section_names() {
  std::vector<std::string> names;
  for (const Field& f : fields()) {
    std::string s = section_of(f.key);
    if (std::find(names.begin(), names.end(), s) == names.end()) names.push_back(s);
  }
  return names;
}

const Field* find_field(const std::string& key) {
  for (const Field& f : fields()) {
    if (key == f.key) return &f;
  }
  return nullptr;
}

// Optimal string alignment distance: Levenshtein plus adjacent transpositions ("trian").
int edit_distance(const std::string& a, const std::string& b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<int>> d(n + 1, std::vector<int>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = static_cast<int>(i);
  for (size_t j = 0; j <= m; ++j) d[0][j] = static_cast<int>(j);
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      int cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[n][m];
}

// Nearest of `candidates` to `name` if close enough to be a likely typo, else "". A candidate
// is close when at most half of the name's letters (at least one) differ; `penalty` (same
// length as candidates) breaks ties toward the more plausible one.
std::string nearest(const std::string& name, const std::vector<std::string>& candidates,
                    const std::vector<std::string>& compare_as, const std::vector<int>& penalty) {
  const int limit = std::max<int>(1, static_cast<int>(name.size()) / 2);
  std::string best;
  int best_score = std::numeric_limits<int>::max();
  for (size_t i = 0; i < candidates.size(); ++i) {
    int d = edit_distance(name, compare_as[i]);
    if (d > limit) continue;
    if (d + penalty[i] < best_score) {
      best_score = d + penalty[i];
      best = candidates[i];
    }
  }
  return best;
}

// Suggestion for an unknown key path: "trian" -> "train"; "train.stepz" -> "train.steps";
// "train.lr" -> "optim.lr" (a field put in the wrong section); "lr" -> "optim.lr".
// `fields_only`: overrides name fields, never whole sections.
std::string suggest_key(const std::string& key, bool fields_only) {
  std::vector<std::string> candidates, compare_as;
  std::vector<int> penalty;
  const bool top_level = key.find('.') == std::string::npos;
  if (top_level && !fields_only) {
    for (const std::string& s : section_names()) {
      candidates.push_back(s);
      compare_as.push_back(s);
      penalty.push_back(0);
    }
  }
  for (const Field& f : fields()) {
    candidates.push_back(f.key);
    compare_as.push_back(leaf_of(f.key));
    penalty.push_back(!top_level && section_of(f.key) == section_of(key) ? 0 : 1);
  }
  return nearest(top_level ? key : leaf_of(key), candidates, compare_as, penalty);
}

// ---- scalar values, by field type ----

const char* type_name(int*) { return "int"; }
const char* type_name(uint64_t*) { return "uint64"; }
const char* type_name(double*) { return "float"; }
const char* type_name(bool*) { return "bool"; }
const char* type_name(std::string*) { return "string"; }

const char* expectation(int*) { return "an integer"; }
const char* expectation(uint64_t*) { return "a non-negative integer"; }
const char* expectation(double*) { return "a number"; }
const char* expectation(bool*) { return "true or false"; }
const char* expectation(std::string*) { return "a string"; }

// Parses all of `text` as T with from_chars (decimal only: no "0x10", no "1_000", no "3.5" for
// an integer). A leading '+' is allowed, as YAML allows it.
template <typename T>
bool parse_number(const std::string& text, T* out) {
  const char* first = text.data();
  const char* last = text.data() + text.size();
  if (first != last && *first == '+') ++first;
  if (first == last || *first == '+' || (*first == '-' && std::is_unsigned_v<T>)) return false;
  T value{};
  auto [end, ec] = std::from_chars(first, last, value);
  if (ec != std::errc() || end != last) return false;
  if constexpr (std::is_floating_point_v<T>) {
    if (!std::isfinite(value)) return false;
  }
  *out = value;
  return true;
}

bool parse_scalar(const std::string& text, int* out) { return parse_number(text, out); }
bool parse_scalar(const std::string& text, uint64_t* out) { return parse_number(text, out); }
bool parse_scalar(const std::string& text, double* out) { return parse_number(text, out); }
bool parse_scalar(const std::string& text, bool* out) {
  if (text != "true" && text != "false") return false;
  *out = text == "true";
  return true;
}
bool parse_scalar(const std::string& text, std::string* out) {
  *out = text;
  return true;
}

std::string format_value(const int* v) { return std::to_string(*v); }
std::string format_value(const uint64_t* v) { return std::to_string(*v); }
// Shortest text that reads back to the same double (std::to_chars); "25" is written "25.0" to
// show the type, "1e-08" as "1e-8".
std::string format_value(const double* v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), *v);
  TESSERA_ASSERT(ec == std::errc(), "formatting a double for the config");
  std::string s(buf, end);
  size_t e = s.find('e');
  if (e != std::string::npos) {  // "1e-08" -> "1e-8"
    size_t digits = e + 1 + (s[e + 1] == '-' || s[e + 1] == '+');
    while (digits + 1 < s.size() && s[digits] == '0') s.erase(digits, 1);
    if (s[e + 1] == '+') s.erase(e + 1, 1);
  } else if (s.find_first_of(".n") == std::string::npos) {
    s += ".0";  // "25" -> "25.0"
  }
  return s;
}
std::string format_value(const bool* v) { return *v ? "true" : "false"; }
// Always double-quoted, so any string (empty, "true", "3", with ':' or '#') reads back as itself.
std::string format_value(const std::string* v) {
  std::string out = "\"";
  for (unsigned char c : *v) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char hex[8];
          std::snprintf(hex, sizeof(hex), "\\x%02x", c);
          out += hex;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string describe_node(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Null:
      return "nothing";
    case YAML::NodeType::Scalar:
      return "'" + node.Scalar() + "'";
    default:
      return "an undefined value";
  }
}

// Sets `field` in `config` from a YAML value node. Null sets a string field to "".
// The message names the key, what it expects and what it got; the caller adds where.
Status set_field(const Field& field, const YAML::Node& value, Config& config) {
  return std::visit(
      [&](auto* member) -> Status {
        using T = std::remove_pointer_t<decltype(member)>;
        if constexpr (std::is_same_v<T, std::string>) {
          if (value.IsNull()) {
            member->clear();
            return Status::ok();
          }
        }
        if (value.IsScalar() && parse_scalar(value.Scalar(), member)) return Status::ok();
        std::string message = std::string("key '") + field.key + "' expects " +
                              expectation(member) + ", got " + describe_node(value);
        if constexpr (std::is_same_v<T, int>) {
          double as_double;
          if (value.IsScalar() && parse_number(value.Scalar(), &as_double)) {
            if (as_double != std::floor(as_double)) {
              message += " (not a whole number)";
            } else if (std::fabs(as_double) >= 2147483648.0) {
              message += " (out of range for an int)";
            } else {
              message += " (write it as plain digits)";
            }
          }
        }
        return Status::error(message);
      },
      field.ref(config));
}

// "arch: \"gpt2\"": the section's first field, `separator`, its default; for hints.
std::string example_line(const std::string& section, const char* separator = ": ") {
  Config defaults;
  for (const Field& f : fields()) {
    if (section_of(f.key) != section) continue;
    return leaf_of(f.key) + separator +
           std::visit([](auto* member) { return format_value(member); }, f.ref(defaults));
  }
  return "";
}

std::string unknown_key_message(const std::string& key, bool fields_only) {
  std::string message = "unknown key '" + key + "'";
  const std::vector<std::string> sections = section_names();
  if (fields_only && std::find(sections.begin(), sections.end(), key) != sections.end()) {
    return message + "; '" + key + "' is a section: name one of its keys, e.g. '" + key + "." +
           example_line(key, "=") + "' (docs/CONFIG.md lists every key)";
  }
  std::string suggestion = suggest_key(key, fields_only);
  if (!suggestion.empty()) message += "; did you mean '" + suggestion + "'?";
  return message + " (docs/CONFIG.md lists every key)";
}

std::string where(const std::string& source, const YAML::Node& node) {
  return source + ":" + std::to_string(node.Mark().line + 1) + ": ";
}

// Applies one parsed YAML document to `config`.
Status apply_document(const YAML::Node& root, const std::string& source, Config& config) {
  if (root.IsNull()) return Status::ok();  // empty document: defaults
  const std::string sections_hint = [] {
    std::string s;
    for (const std::string& name : section_names()) s += (s.empty() ? "" : ", ") + name;
    return s;
  }();
  if (!root.IsMap()) {
    return Status::error(where(source, root) + "the top level must be a map of sections (" +
                         sections_hint + "), got " + describe_node(root) +
                         "; write e.g. 'model:' on its own line, then '  n_layer: 4'");
  }
  std::vector<std::pair<std::string, int>> seen;  // key path, 1-based line
  auto check_duplicate = [&](const std::string& key, const YAML::Node& key_node) -> Status {
    int line = key_node.Mark().line + 1;
    for (const auto& [k, l] : seen) {
      if (k == key) {
        return Status::error(where(source, key_node) + "key '" + key + "' is given twice (lines " +
                             std::to_string(l) + " and " + std::to_string(line) + "); keep one");
      }
    }
    seen.emplace_back(key, line);
    return Status::ok();
  };
  const std::vector<std::string> sections = section_names();
  for (const auto& entry : root) {
    const YAML::Node key_node = entry.first;  // Nodes are handles: copies share the data
    const YAML::Node value = entry.second;
    if (!key_node.IsScalar()) {
      return Status::error(where(source, key_node) + "a key must be a plain name, got " +
                           describe_node(key_node));
    }
    const std::string section = key_node.Scalar();
    if (std::find(sections.begin(), sections.end(), section) == sections.end()) {
      return Status::error(where(source, key_node) + unknown_key_message(section, false));
    }
    TESSERA_RETURN_IF_ERROR(check_duplicate(section, key_node));
    if (value.IsNull()) continue;  // "train:" with nothing under it: defaults
    if (!value.IsMap()) {
      return Status::error(where(source, key_node) + "section '" + section +
                           "' must be a map of keys, got " + describe_node(value) +
                           "; write its keys indented on the lines under '" + section +
                           ":', e.g. '  " + example_line(section) + "'");
    }
    for (const auto& field_entry : value) {
      const YAML::Node field_key = field_entry.first;
      if (!field_key.IsScalar()) {
        return Status::error(where(source, field_key) + "a key in section '" + section +
                             "' must be a plain name, got " + describe_node(field_key));
      }
      const std::string key = section + "." + field_key.Scalar();
      const Field* f = find_field(key);
      if (f == nullptr) {
        return Status::error(where(source, field_key) + unknown_key_message(key, false));
      }
      TESSERA_RETURN_IF_ERROR(check_duplicate(key, field_key));
      Status st = set_field(*f, field_entry.second, config);
      if (!st) return st.with_context(where(source, field_key));
    }
  }
  return Status::ok();
}

// Applies one "key=value" override; the value is read as a YAML scalar.
Status apply_override(const std::string& override_text, Config& config) {
  const std::string context = "override '" + override_text + "': ";
  const size_t eq = override_text.find('=');
  if (eq == std::string::npos) {
    return Status::error(context + "no '='; write it as key=value, e.g. --set train.steps=100");
  }
  auto trim = [](std::string s) {
    const char* ws = " \t";
    size_t b = s.find_first_not_of(ws);
    if (b == std::string::npos) return std::string();
    return s.substr(b, s.find_last_not_of(ws) - b + 1);
  };
  const std::string key = trim(override_text.substr(0, eq));
  const std::string value_text = override_text.substr(eq + 1);
  if (key.empty()) {
    return Status::error(context +
                         "no key before '='; write it as key=value, e.g. "
                         "--set train.steps=100");
  }
  const Field* f = find_field(key);
  if (f == nullptr) return Status::error(context + unknown_key_message(key, true));
  YAML::Node value;
  try {
    value = YAML::Load(value_text);
  } catch (const YAML::Exception& e) {
    return Status::error(context + "value '" + value_text + "' is not valid YAML (" + e.msg +
                         "); quote it, e.g. " + key + "='\"...\"'");
  }
  if (value.IsMap() || value.IsSequence()) {
    return Status::error(context + "key '" + key + "' takes a single value, got " +
                         describe_node(value) + "; if it is text, quote it: --set '" + key + "=\"" +
                         value_text + "\"'");
  }
  return set_field(*f, value, config).with_context(context);
}

// "key 'model.n_layer' = 0 must be > 0; <fix>"
template <typename T>
Status invalid(const char* key, const T& value, const std::string& rule, const std::string& fix) {
  return Status::error(std::string("key '") + key + "' = " + format_value(&value) + " " + rule +
                       "; " + fix);
}

bool is_one_of(const std::string& value, std::initializer_list<const char*> allowed) {
  for (const char* a : allowed) {
    if (value == a) return true;
  }
  return false;
}

std::vector<std::string> yaml_files_in(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::string ext = entry.path().extension().string();
    if (entry.is_regular_file(ec) && (ext == ".yaml" || ext == ".yml")) {
      names.push_back(entry.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

std::vector<ConfigKeyInfo> config_keys() {
  Config defaults;
  std::vector<ConfigKeyInfo> keys;
  for (const Field& f : fields()) {
    std::visit(
        [&](auto* member) {
          keys.push_back({f.key, type_name(member), format_value(member)});
        },
        f.ref(defaults));
  }
  return keys;
}

Status Config::validate() const {
  const ModelConfig& m = model;
  auto positive = [](const char* key, int value, const std::string& what) -> Status {
    if (value > 0) return Status::ok();
    return invalid(key, value, "must be > 0", "set it to a positive " + what);
  };
  if (m.arch != "gpt2") {
    return invalid("model.arch", m.arch, "is not an implemented architecture",
                   "set model.arch=gpt2");
  }
  TESSERA_RETURN_IF_ERROR(positive("model.vocab_size", m.vocab_size, "token count"));
  TESSERA_RETURN_IF_ERROR(positive("model.pad_vocab_to", m.pad_vocab_to,
                                   "multiple (128 is usual; 1 means no padding)"));
  TESSERA_RETURN_IF_ERROR(positive("model.max_seq_len", m.max_seq_len, "length"));
  TESSERA_RETURN_IF_ERROR(positive("model.n_layer", m.n_layer, "layer count"));
  TESSERA_RETURN_IF_ERROR(positive("model.n_head", m.n_head, "head count"));
  TESSERA_RETURN_IF_ERROR(positive("model.n_embd", m.n_embd, "width"));
  if (m.n_embd % m.n_head != 0) {
    int lower = m.n_embd / m.n_head * m.n_head;
    std::string fix = "set model.n_embd to a multiple of model.n_head (" +
                      (lower > 0 ? std::to_string(lower) + " or " : std::string()) +
                      std::to_string(lower + m.n_head) + ") or change model.n_head";
    return invalid("model.n_embd", m.n_embd,
                   "is not divisible by model.n_head = " + std::to_string(m.n_head), fix);
  }
  if (static_cast<int64_t>(m.vocab_size) + m.pad_vocab_to > std::numeric_limits<int>::max()) {
    return invalid("model.vocab_size", m.vocab_size, "is too large",
                   "use a vocabulary below 2^31 - model.pad_vocab_to");
  }
  if (!(m.init_std > 0)) {
    return invalid("model.init_std", m.init_std, "must be > 0", "0.02 is GPT-2's value");
  }

  const TrainConfig& t = train;
  TESSERA_RETURN_IF_ERROR(positive("train.steps", t.steps, "number of steps"));
  TESSERA_RETURN_IF_ERROR(positive("train.batch_size", t.batch_size, "number of sequences"));
  TESSERA_RETURN_IF_ERROR(positive("train.seq_len", t.seq_len, "length"));
  if (t.seq_len > m.max_seq_len) {
    return invalid("train.seq_len", t.seq_len,
                   "exceeds model.max_seq_len = " + std::to_string(m.max_seq_len),
                   "lower train.seq_len or raise model.max_seq_len");
  }
  if (t.micro_batch_size < 0) {
    return invalid("train.micro_batch_size", t.micro_batch_size, "must be >= 0",
                   "use 0 (batch_size / dp) or a positive count");
  }
  if (t.micro_batch_size > t.batch_size) {
    return invalid("train.micro_batch_size", t.micro_batch_size,
                   "exceeds train.batch_size = " + std::to_string(t.batch_size),
                   "lower it, or use 0 for batch_size / dp");
  }
  if (t.val_every < 0) {
    return invalid("train.val_every", t.val_every, "must be >= 0", "use 0 to never validate");
  }
  if (t.val_every > 0 && t.val_batches <= 0) {
    return invalid("train.val_batches", t.val_batches, "must be > 0 when train.val_every > 0",
                   "set it to a positive count, or train.val_every=0");
  }
  if (t.val_batches < 0) {
    return invalid("train.val_batches", t.val_batches, "must be >= 0", "set it to a count");
  }
  TESSERA_RETURN_IF_ERROR(positive("train.log_every", t.log_every, "number of steps"));
  if (t.threads < 0) {
    return invalid("train.threads", t.threads, "must be >= 0",
                   "use 0 for cores / local ranks, or a positive count");
  }
  if (t.skip_nonfinite < 0) {
    return invalid("train.skip_nonfinite", t.skip_nonfinite, "must be >= 0",
                   "use 0 to stop at the first non-finite step, or the number of such steps to "
                   "skip");
  }
  if (!is_one_of(t.dtype, {"fp32", "bf16"})) {
    return invalid("train.dtype", t.dtype, "is not a dtype", "use fp32 or bf16");
  }
  if (!is_one_of(t.device, {"cpu", "cuda"})) {
    return invalid("train.device", t.device, "is not a device", "use cpu or cuda");
  }

  const OptimConfig& o = optim;
  if (!(o.lr > 0)) return invalid("optim.lr", o.lr, "must be > 0", "e.g. 1e-3");
  if (!(o.min_lr >= 0 && o.min_lr <= o.lr)) {
    return invalid("optim.min_lr", o.min_lr,
                   "must be in [0, optim.lr = " + format_value(&o.lr) + "]",
                   "it is the cosine floor; 0.1 * optim.lr is usual");
  }
  if (o.warmup_steps < 0) {
    return invalid("optim.warmup_steps", o.warmup_steps, "must be >= 0", "use 0 for no warmup");
  }
  if (!is_one_of(o.schedule, {"cosine", "constant"})) {
    return invalid("optim.schedule", o.schedule, "is not a schedule", "use cosine or constant");
  }
  if (!(o.weight_decay >= 0)) {
    return invalid("optim.weight_decay", o.weight_decay, "must be >= 0", "0.1 is usual");
  }
  if (!(o.beta1 >= 0 && o.beta1 < 1)) {
    return invalid("optim.beta1", o.beta1, "must be in [0, 1)", "0.9 is usual");
  }
  if (!(o.beta2 >= 0 && o.beta2 < 1)) {
    return invalid("optim.beta2", o.beta2, "must be in [0, 1)", "0.95 is usual");
  }
  if (!(o.eps > 0)) return invalid("optim.eps", o.eps, "must be > 0", "1e-8 is usual");
  if (!(o.grad_clip >= 0)) {
    return invalid("optim.grad_clip", o.grad_clip, "must be >= 0", "use 0 to turn clipping off");
  }
  if (o.zero != 0 && o.zero != 1) {
    return invalid("optim.zero", o.zero, "is not a ZeRO stage",
                   "use 0 (every dp rank holds all AdamW state) or 1 (moments sharded over dp)");
  }
  if (o.zero == 1 && parallel.compress_bf16) {
    return invalid("optim.zero", o.zero, "does not combine with parallel.compress_bf16 yet",
                   "set optim.zero=0 or parallel.compress_bf16=false");
  }
  if (o.zero == 1 && t.device == "cuda") {
    return invalid("optim.zero", o.zero, "runs on the CPU backend only so far",
                   "set optim.zero=0 with train.device=cuda");
  }

  if (parallel.tp < 1) {
    return invalid("parallel.tp", parallel.tp, "must be >= 1", "use 1 for no tensor parallelism");
  }
  if (!is_one_of(parallel.sparse_embedding, {"auto", "on", "off"})) {
    return invalid("parallel.sparse_embedding", parallel.sparse_embedding,
                   "is not a sparse-embedding mode", "use auto, on or off");
  }
  if (!is_one_of(parallel.node_shared, {"auto", "on", "off"})) {
    return invalid("parallel.node_shared", parallel.node_shared, "is not a node-shared mode",
                   "use auto, on or off");
  }
  if (parallel.node_shared == "on" && parallel.sparse_embedding == "on") {
    return invalid("parallel.node_shared", parallel.node_shared,
                   "sums the dense gradients in shared memory, and parallel.sparse_embedding=on "
                   "asks for the MPI exchange of the embedding's rows",
                   "set one of them to auto");
  }
  if (!(parallel.bucket_mb > 0)) {
    return invalid("parallel.bucket_mb", parallel.bucket_mb, "must be > 0", "25 is usual");
  }
  if (!(parallel.collective_timeout_s >= 0)) {
    return invalid("parallel.collective_timeout_s", parallel.collective_timeout_s, "must be >= 0",
                   "300 is usual; use 0 to turn the stalled-rank watchdog off");
  }

  const CheckpointConfig& c = checkpoint;
  if (c.every < 0) {
    return invalid("checkpoint.every", c.every, "must be >= 0",
                   "use 0 to write only the final checkpoint");
  }
  if (c.keep < 1) return invalid("checkpoint.keep", c.keep, "must be >= 1", "e.g. 3");
  if ((c.resume == "latest" || c.resume == "auto") && c.dir.empty()) {
    return invalid("checkpoint.resume", c.resume, "needs checkpoint.dir to look in",
                   "set checkpoint.dir, or give checkpoint.resume a file path");
  }
  // init_from starts a new run from weights; an explicit resume continues one. Only `auto` may
  // sit beside it: a requeued fine-tuning job resumes its own checkpoint once it has one.
  if (!t.init_from.empty() && !c.resume.empty() && c.resume != "auto") {
    return invalid("train.init_from", t.init_from,
                   "cannot be combined with checkpoint.resume = " + format_value(&c.resume),
                   "drop one: checkpoint.resume continues a run (weights, AdamW state, step, "
                   "data position), train.init_from starts a new one from weights; "
                   "checkpoint.resume=auto may be kept");
  }
  if (!is_one_of(c.transfers, {"independent", "collective"})) {
    return invalid("checkpoint.transfers", c.transfers, "is not a transfer mode",
                   "use independent (the default) or collective");
  }
  return validate_serve(serve);
}

Status validate_serve(const ServeConfig& s) {
  if (s.host.empty()) {
    return invalid("serve.host", s.host, "is empty",
                   "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)");
  }
  if (s.port < 0 || s.port > 65535) {
    return invalid("serve.port", s.port, "is not a TCP port", "pick 1-65535, or 0 for a free one");
  }
  if (s.max_sequences < 1) {
    return invalid("serve.max_sequences", s.max_sequences, "must be >= 1",
                   "at least one sequence must decode; 8 is the default");
  }
  if (s.max_queue < 1) {
    return invalid("serve.max_queue", s.max_queue, "must be >= 1",
                   "a request that finds every slot busy waits in the queue; 64 is the default");
  }
  if (!(s.kv_cache_mb >= 0)) {
    return invalid("serve.kv_cache_mb", s.kv_cache_mb, "must be >= 0",
                   "give a budget in MiB, or 0 for none beyond the slots");
  }
  if (s.max_prefill_tokens < 0) {
    return invalid("serve.max_prefill_tokens", s.max_prefill_tokens, "must be >= 0",
                   "give the prompt tokens one decode step may prefill, or 0 (the default) for "
                   "the device's: 128 on cpu, 2048 on cuda");
  }
  if (s.tp < 0) {
    return invalid("serve.tp", s.tp, "must be >= 0",
                   "use 0 for every rank (one replica) or a size that divides the ranks");
  }
  if (!is_one_of(s.device, {"cpu", "cuda"})) {
    return invalid("serve.device", s.device, "is not a device", "use cpu or cuda");
  }
  if (s.threads < 0) {
    return invalid("serve.threads", s.threads, "must be >= 0",
                   "use 0 for cores / local ranks, or a positive count");
  }
  return Status::ok();
}

std::string Config::to_yaml() const {
  Config copy = *this;  // field refs are non-const; read through a copy
  std::string out = "# Resolved Tessera config: every key (docs/CONFIG.md).\n";
  std::string current;
  for (const Field& f : fields()) {
    std::string section = section_of(f.key);
    if (section != current) {
      out += (current.empty() ? "" : "\n") + section + ":\n";
      current = section;
    }
    out += "  " + leaf_of(f.key) + ": ";
    out += std::visit([](auto* member) { return format_value(member); }, f.ref(copy));
    out += "\n";
  }
  return out;
}

Result<Config> parse_config(const std::string& yaml_text, const std::string& source_name,
                            const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    // YAML forbids tabs in indentation; yaml-cpp then reports a puzzling "illegal map value".
    // Name the first tab-indented line at or before the error instead.
    std::istringstream lines(yaml_text);
    std::string line;
    for (int n = 1; std::getline(lines, line) && n <= e.mark.line + 1; ++n) {
      const size_t indent = line.find_first_not_of(" \t");
      if (indent != std::string::npos && line.find('\t') < indent) {
        return Status::error(source_name + ":" + std::to_string(n) + ": line " + std::to_string(n) +
                             " is indented with a tab; YAML indents with spaces only: replace "
                             "the tab with spaces");
      }
    }
    return Status::error(source_name + ":" + std::to_string(e.mark.line + 1) + ":" +
                         std::to_string(e.mark.column + 1) + ": YAML syntax error: " + e.msg +
                         "; fix the file at that line and column");
  }
  Config config;
  TESSERA_RETURN_IF_ERROR(apply_document(root, source_name, config));
  for (const std::string& o : overrides) TESSERA_RETURN_IF_ERROR(apply_override(o, config));
  Status valid = config.validate();
  if (!valid) {
    return valid.with_context(source_name + (overrides.empty() ? "" : " (with --set overrides)") +
                              ": ");
  }
  return config;
}

Result<Config> load_config(const std::string& path, const std::vector<std::string>& overrides) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  if (!fs::exists(p, ec)) {
    fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
    std::string shown_dir = p.parent_path().empty() ? "./" : p.parent_path().string() + "/";
    std::string message = "config file '" + path + "' not found";
    if (!fs::is_directory(dir, ec)) {
      return Status::error(message + "; directory '" + shown_dir + "' does not exist either; " +
                           "check the path (the shipped configs are in configs/)");
    }
    std::vector<std::string> names = yaml_files_in(dir);
    std::vector<int> no_penalty(names.size(), 0);
    std::string listing;
    for (const std::string& n : names) listing += (listing.empty() ? "" : ", ") + n;
    message += "; check the path (" + shown_dir +
               (names.empty() ? " has no .yaml files)" : " has " + listing + ")");
    std::string close = nearest(p.filename().string(), names, names, no_penalty);
    if (!close.empty()) message += "; did you mean '" + (dir / close).string() + "'?";
    return Status::error(message);
  }
  if (fs::is_directory(p, ec)) {
    return Status::error("config file '" + path + "' is a directory; pass a .yaml file in it");
  }
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    return Status::error("config file '" + path + "' cannot be read (" + std::strerror(errno) +
                         "); check its permissions");
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return Status::error("config file '" + path +
                         "' could not be read to the end; check the "
                         "file and the disk");
  }
  return parse_config(text.str(), path, overrides);
}

}  // namespace tessera::core
