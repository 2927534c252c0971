// tessera-data: trains a byte-level BPE tokenizer, tokenizes text into llm.c-layout shards
// (train and validation split at a line boundary), describes a shard and prints a text's ids.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/app.h"
#include "core/log.h"
#include "core/timer.h"
#include "data/token_shard.h"
#include "data/tokenizer.h"

using namespace tessera;

namespace {

// The --input corpus. A directory, an unreadable file and an empty one are errors naming --input:
// each would otherwise reach the tokenizer as empty text.
core::Result<std::string> read_text(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return core::Status::error("--input '" + path +
                               "' is a directory, not a text file; give the corpus file itself, "
                               "e.g. --input data/shakespeare.txt");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return core::Status::error("cannot read --input '" + path + "': " + std::strerror(errno) +
                               "; check the path");
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) {
    return core::Status::error("cannot read --input '" + path + "': " + std::strerror(errno) +
                               "; check the file");
  }
  std::string text = buffer.str();
  if (text.empty()) {
    return core::Status::error("--input '" + path +
                               "' is empty (0 bytes); give a text corpus with several lines, "
                               "e.g. --input data/shakespeare.txt");
  }
  return text;
}

// A byte-level BPE vocabulary holds the 256 single bytes and <|endoftext|> before any merge.
core::Status check_vocab_size(int vocab_size) {
  if (vocab_size < 257) {
    return core::Status::error("--vocab-size " + std::to_string(vocab_size) +
                               " is too small: a byte-level BPE needs the 256 byte tokens + "
                               "<|endoftext|>, so at least 257; give e.g. --vocab-size 4096");
  }
  return core::Status::ok();
}

// The byte offset where the validation part starts: the first line start at or after the last
// `val_fraction` of the text, else the last line start before it.
core::Result<size_t> split_point(const std::string& text, double val_fraction,
                                 const std::string& path) {
  if (!(val_fraction > 0.0 && val_fraction < 1.0)) {
    std::ostringstream value;
    value << val_fraction;
    return core::Status::error("--val-fraction " + value.str() +
                               " must lie strictly between 0 and 1, e.g. 0.1");
  }
  const auto target =
      static_cast<size_t>(std::llround(static_cast<double>(text.size()) * (1.0 - val_fraction)));
  size_t nl = text.find('\n', target == 0 ? 0 : target - 1);
  if (nl != std::string::npos && nl + 1 < text.size()) return nl + 1;
  nl = target == 0 ? std::string::npos : text.rfind('\n', target - 1);
  if (nl != std::string::npos && nl + 1 < text.size()) return nl + 1;
  return core::Status::error("input '" + path +
                             "' has no line break to split a validation part at; give a text "
                             "with several lines");
}

// Encodes `text` with an end-of-text token appended and writes it as a shard.
core::Result<int64_t> write_split(const data::Tokenizer& tok, std::string_view text,
                                  const std::string& out_path) {
  std::vector<int32_t> ids = tok.encode(text);
  ids.push_back(tok.eot_token());
  TESSERA_RETURN_IF_ERROR(data::write_token_shard(out_path, ids, tok.vocab_size()));
  return static_cast<int64_t>(ids.size());
}

// H = -sum_t p(t) ln p(t) over the shard's token frequencies, in nats/token: the cross-entropy
// of a model that knows only unigram frequencies (a baseline for the training loss).
core::Result<double> unigram_entropy(const std::string& shard_path, int vocab_size) {
  auto shard = data::TokenShard::open(shard_path);
  if (!shard) return shard.status();
  std::vector<int64_t> counts(vocab_size, 0);
  for (int64_t i = 0; i < shard->size(); ++i) {
    const int32_t t = shard->token(i);
    if (t >= 0 && t < vocab_size) ++counts[t];
  }
  const auto n = static_cast<double>(shard->size());
  double h = 0.0;
  for (int64_t c : counts) {
    if (c > 0) h -= static_cast<double>(c) / n * std::log(static_cast<double>(c) / n);
  }
  return h;
}

core::Status train_tokenizer(const std::string& input, int vocab_size, const std::string& out) {
  TESSERA_RETURN_IF_ERROR(check_vocab_size(vocab_size));
  auto text = read_text(input);
  if (!text) return text.status();
  core::Timer timer;
  data::Tokenizer tok = data::Tokenizer::train(*text, vocab_size);
  TESSERA_RETURN_IF_ERROR(tok.save_prefix(out));
  char line[256];
  std::snprintf(line, sizeof line, "trained %d tokens (%d merges) on %zu bytes in %.1f s",
                tok.vocab_size(), tok.num_merges(), text->size(), timer.seconds());
  core::log_info(line);
  core::log_info("wrote " + out + ".vocab.json and " + out + ".merges.txt");
  return core::Status::ok();
}

struct SplitCounts {
  int64_t train_tokens = 0;
  int64_t val_tokens = 0;
};

core::Result<SplitCounts> tokenize_split(const data::Tokenizer& tok, const std::string& text,
                                         size_t cut, const std::string& train_out,
                                         const std::string& val_out) {
  SplitCounts counts;
  auto train = write_split(tok, std::string_view(text).substr(0, cut), train_out);
  if (!train) return train.status();
  auto val = write_split(tok, std::string_view(text).substr(cut), val_out);
  if (!val) return val.status();
  counts.train_tokens = *train;
  counts.val_tokens = *val;
  return counts;
}

void report_split(const SplitCounts& c, size_t train_bytes, size_t val_bytes,
                  const std::string& train_out, const std::string& val_out) {
  char line[512];
  std::snprintf(line, sizeof line, "train: %ld tokens (%.2f bytes/token) -> %s",
                static_cast<long>(c.train_tokens),
                static_cast<double>(train_bytes) / static_cast<double>(c.train_tokens),
                train_out.c_str());
  core::log_info(line);
  std::snprintf(line, sizeof line, "val:   %ld tokens (%.2f bytes/token) -> %s",
                static_cast<long>(c.val_tokens),
                static_cast<double>(val_bytes) / static_cast<double>(c.val_tokens),
                val_out.c_str());
  core::log_info(line);
}

core::Status tokenize(const std::string& prefix, const std::string& input,
                      const std::string& train_out, const std::string& val_out,
                      double val_fraction) {
  auto tok = data::Tokenizer::load_prefix(prefix);
  if (!tok) return tok.status();
  auto text = read_text(input);
  if (!text) return text.status();
  auto cut = split_point(*text, val_fraction, input);
  if (!cut) return cut.status();
  auto counts = tokenize_split(*tok, *text, *cut, train_out, val_out);
  if (!counts) return counts.status();
  report_split(*counts, *cut, text->size() - *cut, train_out, val_out);
  return core::Status::ok();
}

core::Status prepare(const std::string& input, int vocab_size, const std::string& out_dir,
                     double val_fraction, bool if_missing) {
  const std::string prefix = out_dir + "/tokenizer";
  const std::string train_out = out_dir + "/train.bin", val_out = out_dir + "/val.bin";
  namespace fs = std::filesystem;
  const bool present = fs::exists(prefix + ".vocab.json") && fs::exists(prefix + ".merges.txt") &&
                       fs::exists(train_out) && fs::exists(val_out);
  if (if_missing && present) {
    core::log_info("prepare: " + out_dir +
                   " already holds the tokenizer and shards (--if-missing)");
  } else {
    TESSERA_RETURN_IF_ERROR(check_vocab_size(vocab_size));
    auto text = read_text(input);
    if (!text) return text.status();
    auto cut = split_point(*text, val_fraction, input);
    if (!cut) return cut.status();
    std::error_code ec;
    fs::create_directories(out_dir, ec);
    if (ec) {
      return core::Status::error("cannot create --out-dir '" + out_dir + "': " + ec.message());
    }
    // The tokenizer sees only the training part, so validation text stays unseen.
    core::Timer timer;
    data::Tokenizer tok =
        data::Tokenizer::train(std::string_view(*text).substr(0, *cut), vocab_size);
    TESSERA_RETURN_IF_ERROR(tok.save_prefix(prefix));
    char line[256];
    std::snprintf(line, sizeof line,
                  "tokenizer: %d tokens trained in %.1f s -> %s.{vocab.json,merges.txt}",
                  tok.vocab_size(), timer.seconds(), prefix.c_str());
    core::log_info(line);
    auto counts = tokenize_split(tok, *text, *cut, train_out, val_out);
    if (!counts) return counts.status();
    report_split(*counts, *cut, text->size() - *cut, train_out, val_out);
  }
  auto tok = data::Tokenizer::load_prefix(prefix);
  if (!tok) return tok.status();
  auto h = unigram_entropy(train_out, tok->vocab_size());
  if (!h) return h.status();
  char line[256];
  std::snprintf(line, sizeof line,
                "unigram entropy of train.bin: %.3f nats/token (the loss of a model that knows "
                "only token frequencies; uniform would be ln %d = %.3f)",
                *h, tok->vocab_size(), std::log(static_cast<double>(tok->vocab_size())));
  core::log_info(line);
  return core::Status::ok();
}

core::Status info(const std::string& path, const std::string& tokenizer_prefix, int count) {
  auto shard = data::TokenShard::open(path);
  if (!shard) return shard.status();
  const int bytes = shard->version() == data::kShardVersionU16 ? 2 : 4;
  core::log_info("file:    " + path);
  core::log_info("magic:   " + std::to_string(data::kShardMagic));
  core::log_info("version: " + std::to_string(shard->version()) + " (uint" +
                 std::to_string(8 * bytes) + " tokens)");
  core::log_info("tokens:  " + std::to_string(shard->size()));
  const int64_t n = std::min<int64_t>(std::max(count, 0), shard->size());
  std::string first = "first:  ";
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) {
    ids.push_back(shard->token(i));
    first += " " + std::to_string(ids.back());
  }
  core::log_info(first);
  if (!tokenizer_prefix.empty()) {
    auto tok = data::Tokenizer::load_prefix(tokenizer_prefix);
    if (!tok) return tok.status();
    std::string text;
    for (int32_t t : ids) text += "[" + tok->decode_token(t) + "]";
    core::log_info("decoded: " + text);
  }
  return core::Status::ok();
}

// Prints the ids of the whole --input text (no end-of-text appended) on one line, separated by
// spaces: what a shard written by `tokenize` holds for the same text.
core::Status encode(const std::string& prefix, const std::string& input) {
  auto tok = data::Tokenizer::load_prefix(prefix);
  if (!tok) return tok.status();
  auto text = read_text(input);
  if (!text) return text.status();
  std::string line;
  for (int32_t id : tok->encode(*text)) {
    if (!line.empty()) line += ' ';
    line += std::to_string(id);
  }
  line += '\n';
  if (std::fwrite(line.data(), 1, line.size(), stdout) != line.size() || std::fflush(stdout) != 0) {
    return core::Status::error(std::string("cannot write the ids to stdout: ") +
                               std::strerror(errno));
  }
  return core::Status::ok();
}

}  // namespace

int main(int argc, char** argv) {
  return core::run_app("tessera-data", argc, argv, [](int ac, char** av) -> core::Result<int> {
    CLI::App app{
        "Tokenizer training and token shards. Example: tessera-data prepare --input "
        "data/shakespeare.txt --vocab-size 4096 --out-dir out/tiny/data"};
    app.require_subcommand(1);

    std::string input, out, prefix, train_out, val_out, out_dir, shard_path;
    int vocab_size = 0, count = 16;
    double val_fraction = 0.1;
    bool if_missing = false;

    CLI::App* train_cmd = app.add_subcommand("train-tokenizer", "train BPE merges on a text");
    train_cmd->add_option("--input", input, "text file")->required();
    train_cmd->add_option("--vocab-size", vocab_size, "tokens incl. 256 bytes and <|endoftext|>")
        ->required();
    train_cmd->add_option("--out", out, "writes OUT.vocab.json and OUT.merges.txt")->required();

    CLI::App* tok_cmd = app.add_subcommand("tokenize", "text -> train and validation shards");
    tok_cmd
        ->add_option("--tokenizer", prefix,
                     "tokenizer prefix (PREFIX.vocab.json, "
                     "PREFIX.merges.txt)")
        ->required();
    tok_cmd->add_option("--input", input, "text file")->required();
    tok_cmd->add_option("--train-out", train_out, "training shard to write")->required();
    tok_cmd->add_option("--val-out", val_out, "validation shard to write")->required();
    tok_cmd->add_option("--val-fraction", val_fraction, "last part of the text for validation")
        ->capture_default_str();

    CLI::App* prep_cmd = app.add_subcommand(
        "prepare",
        "train a tokenizer on the training part, write DIR/{tokenizer.*,train.bin,val.bin}");
    prep_cmd->add_option("--input", input, "text file")->required();
    prep_cmd->add_option("--vocab-size", vocab_size, "tokens incl. 256 bytes and <|endoftext|>")
        ->required();
    prep_cmd->add_option("--out-dir", out_dir, "output directory")->required();
    prep_cmd->add_option("--val-fraction", val_fraction, "last part of the text for validation")
        ->capture_default_str();
    prep_cmd->add_flag("--if-missing", if_missing, "keep DIR's outputs when all of them exist");

    CLI::App* info_cmd = app.add_subcommand("info", "describe a token shard");
    info_cmd->add_option("shard", shard_path, "shard file")->required();
    info_cmd->add_option("--tokenizer", prefix, "also decode the first tokens with this tokenizer");
    info_cmd->add_option("--count", count, "how many first tokens to show")->capture_default_str();

    CLI::App* enc_cmd =
        app.add_subcommand("encode", "text -> token ids on stdout (one line, space-separated)");
    enc_cmd
        ->add_option("--tokenizer", prefix,
                     "tokenizer prefix (PREFIX.vocab.json, PREFIX.merges.txt; GPT-2's "
                     "encoder.json and vocab.bpe under these names)")
        ->required();
    enc_cmd->add_option("--input", input, "text file")->required();

    std::optional<int> help_exit;
    TESSERA_RETURN_IF_ERROR(core::parse_command_line(app, ac, av, &help_exit));
    if (help_exit) return *help_exit;
    core::Status st;
    if (*train_cmd) {
      st = train_tokenizer(input, vocab_size, out);
    } else if (*tok_cmd) {
      st = tokenize(prefix, input, train_out, val_out, val_fraction);
    } else if (*prep_cmd) {
      st = prepare(input, vocab_size, out_dir, val_fraction, if_missing);
    } else if (*enc_cmd) {
      st = encode(prefix, input);
    } else {
      st = info(shard_path, prefix, count);
    }
    if (!st) return st;
    return 0;
  });
}
