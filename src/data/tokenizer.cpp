// GPT-2 byte-level BPE: pre-tokenisation with PCRE2 (UTF + UCP, invalid UTF-8 tolerated), the
// vocab.json byte alphabet, rank-ordered merges, and GPT-2's vocab.json / merges.txt files.
#include "data/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>

#include "core/error.h"
#include "data/bpe_trainer.h"

namespace tessera::data {
namespace {

constexpr const char* kEndOfText = "<|endoftext|>";
constexpr const char* kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// GPT-2's pre-tokenisation pattern (Radford et al. 2019, encoder.py), written for PCRE2.
constexpr const char* kPattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// The compiled pattern, shared read-only by every thread (PCRE2 code is immutable after JIT).
class PreTokenRegex {
 public:
  PreTokenRegex() {
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    // MATCH_INVALID_UTF: invalid sequences match nothing and no match spans one, which equals
    // running the regex separately over each valid span.
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error_code,
                          &error_offset, nullptr);
    TESSERA_ASSERT(code_ != nullptr, "compiling GPT-2's pre-tokenisation regex with PCRE2");
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // optional speed-up; the interpreter also works
  }
  ~PreTokenRegex() { pcre2_code_free(code_); }
  PreTokenRegex(const PreTokenRegex&) = delete;
  PreTokenRegex& operator=(const PreTokenRegex&) = delete;

  // Calls fn(piece) for each pre-token of `text` in order.
  template <typename Fn>
  void for_each_piece(std::string_view text, Fn&& fn) const {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
        pcre2_match_data_create_from_pattern(code_, nullptr), &pcre2_match_data_free);
    TESSERA_ASSERT(match != nullptr, "allocating PCRE2 match data");
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t pos = 0;
    while (pos < text.size()) {
      int rc = pcre2_match(code_, subject, text.size(), pos, 0, match.get(), nullptr);
      TESSERA_ASSERT(rc > 0 || rc == PCRE2_ERROR_NOMATCH,
                     "matching GPT-2's pre-tokenisation regex");
      size_t start = text.size(), end = text.size();
      if (rc > 0) {
        const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
        start = ovector[0];
        end = ovector[1];
      }
      // Every valid character matches some alternative, so a gap holds only invalid bytes.
      for (; pos < start; ++pos) fn(text.substr(pos, 1));
      // Invariant: no alternative matches the empty string, so the loop advances.
      TESSERA_ASSERT(rc <= 0 || end > start, "pre-tokenising: the regex matched nothing");
      if (end > start) fn(text.substr(start, end - start));
      pos = end;
    }
  }

 private:
  pcre2_code* code_ = nullptr;
};

const PreTokenRegex& pre_token_regex() {
  static const PreTokenRegex regex;
  return regex;
}

bool is_printable_byte(int b) {
  return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

// byte -> code point and code point -> byte (-1 where none) of GPT-2's vocab alphabet.
struct ByteAlphabet {
  std::array<uint32_t, 256> code_point{};
  std::array<int, 512> byte_of{};
  ByteAlphabet() {
    byte_of.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      code_point[b] = is_printable_byte(b) ? static_cast<uint32_t>(b) : next++;
      byte_of[code_point[b]] = b;
    }
  }
};

const ByteAlphabet& alphabet() {
  static const ByteAlphabet table;
  return table;
}

void append_utf8(uint32_t cp, std::string& out) {
  // The alphabet's code points are all below 0x800: one or two UTF-8 bytes.
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string bytes_to_vocab_string(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) append_utf8(alphabet().code_point[static_cast<uint8_t>(c)], out);
  return out;
}

// Inverse of bytes_to_vocab_string; false when `s` holds a character outside the alphabet.
bool vocab_string_to_bytes(std::string_view s, std::string& out) {
  out.clear();
  for (size_t i = 0; i < s.size();) {
    auto c0 = static_cast<uint8_t>(s[i]);
    uint32_t cp;
    if (c0 < 0x80) {
      cp = c0;
      i += 1;
    } else if ((c0 & 0xE0) == 0xC0 && i + 1 < s.size()) {
      cp = ((c0 & 0x1Fu) << 6) | (static_cast<uint8_t>(s[i + 1]) & 0x3Fu);
      i += 2;
    } else {
      return false;  // three- and four-byte characters lie outside the alphabet
    }
    if (cp >= alphabet().byte_of.size() || alphabet().byte_of[cp] < 0) return false;
    out.push_back(static_cast<char>(alphabet().byte_of[cp]));
  }
  return true;
}

core::Result<std::string> read_file(const std::string& path, const char* what) {
  // A directory opens and reads as empty text (an empty merges list would load silently).
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return core::Status::error(std::string(what) + " '" + path +
                               "' is a directory, not a tokenizer file; give the tokenizer "
                               "prefix PREFIX of the files PREFIX.vocab.json and "
                               "PREFIX.merges.txt (tessera-data train-tokenizer writes them)");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return core::Status::error(std::string("cannot open ") + what + " '" + path +
                               "': " + std::strerror(errno) +
                               "; check the path (tessera-data train-tokenizer writes "
                               "<prefix>.vocab.json and <prefix>.merges.txt)");
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) {
    return core::Status::error(std::string("cannot read ") + what + " '" + path +
                               "': " + std::strerror(errno) + "; check the file");
  }
  return buffer.str();
}

// True when `s` is well-formed UTF-8 (no overlong forms, surrogates or code points > U+10FFFF).
bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<uint8_t>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1Fu;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0Fu;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07u;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

// Text from a file, safe to quote in a one-line message: control bytes (and every non-ASCII
// byte when the text is not valid UTF-8) as \xNN, at most `max_bytes` of it.
std::string quote_for_message(std::string_view s, size_t max_bytes = 60) {
  const bool utf8 = valid_utf8(s);
  std::string out;
  for (size_t i = 0; i < s.size() && i < max_bytes; ++i) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x20 || c == 0x7F || (!utf8 && c >= 0x80)) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02X", c);
      out += hex;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (s.size() > max_bytes) {
    // Do not end inside a UTF-8 character.
    while (!out.empty() && (static_cast<uint8_t>(out.back()) & 0xC0) == 0x80) out.pop_back();
    if (!out.empty() && static_cast<uint8_t>(out.back()) >= 0xC0) out.pop_back();
    out += "...";
  }
  return out;
}

core::Status write_file(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  out.close();
  if (!out) {
    return core::Status::error("cannot write tokenizer file '" + path +
                               "': " + std::strerror(errno) +
                               "; check the directory exists and is "
                               "writable");
  }
  return core::Status::ok();
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

}  // namespace

std::vector<std::string_view> pretokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  pre_token_regex().for_each_piece(text, [&](std::string_view piece) { pieces.push_back(piece); });
  return pieces;
}

std::string byte_to_unicode(uint8_t b) {
  std::string out;
  append_utf8(alphabet().code_point[b], out);
  return out;
}

core::Result<Tokenizer> Tokenizer::from_parts(std::vector<std::string> token_bytes,
                                              std::vector<Merge> merges, int32_t eot_token,
                                              const std::string& source) {
  Tokenizer tok;
  const auto n = static_cast<int64_t>(token_bytes.size());
  tok.byte_token_.fill(-1);
  for (int32_t id = 0; id < n; ++id) {
    if (token_bytes[id].size() == 1) tok.byte_token_[static_cast<uint8_t>(token_bytes[id][0])] = id;
  }
  for (int b = 0; b < 256; ++b) {
    if (tok.byte_token_[b] < 0) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "0x%02X", b);
      return core::Status::error("tokenizer " + source + ": no token for byte " + hex +
                                 "; a byte-level vocabulary must hold all 256 single bytes");
    }
  }
  if (eot_token < 0 || eot_token >= n) {
    return core::Status::error("tokenizer " + source + ": vocabulary has no \"" + kEndOfText +
                               "\" token; add it as the last id");
  }
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const Merge& m = merges[rank];
    // Invariant: ids are in range and result's bytes are left's then right's (callers build
    // merges by concatenation).
    TESSERA_ASSERT(m.left >= 0 && m.left < n && m.right >= 0 && m.right < n && m.result >= 0 &&
                       m.result < n &&
                       token_bytes[m.result] == token_bytes[m.left] + token_bytes[m.right],
                   "building BPE merge rules");
    auto [it, inserted] = tok.merge_rules_.try_emplace(
        pair_key(m.left, m.right), MergeRule{static_cast<int32_t>(rank), m.result});
    if (!inserted) {
      return core::Status::error("tokenizer " + source + ": merge " + std::to_string(rank) +
                                 " repeats merge " + std::to_string(it->second.rank) +
                                 "; remove the duplicate line from the merges file");
    }
  }
  tok.token_bytes_ = std::move(token_bytes);
  tok.merges_ = std::move(merges);
  tok.eot_token_ = eot_token;
  return tok;
}

core::Result<Tokenizer> Tokenizer::load(const std::string& vocab_json_path,
                                        const std::string& merges_txt_path) {
  core::Result<std::string> vocab_text = read_file(vocab_json_path, "tokenizer vocabulary");
  if (!vocab_text) return vocab_text.status();
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(*vocab_text);
  } catch (const nlohmann::json::exception& e) {
    return core::Status::error("tokenizer vocabulary '" + vocab_json_path +
                               "' is not valid JSON (" + quote_for_message(e.what(), 300) +
                               "); expected GPT-2's vocab.json: {\"token\": id, ...}");
  }
  if (!vocab.is_object() || vocab.empty()) {
    return core::Status::error("tokenizer vocabulary '" + vocab_json_path +
                               "' is not a non-empty JSON object; expected GPT-2's vocab.json: "
                               "{\"token\": id, ...}");
  }
  const auto n = static_cast<int64_t>(vocab.size());
  std::vector<std::string> token_bytes(n);
  std::vector<bool> seen(n, false);
  std::unordered_map<std::string, int32_t> id_of;  // vocab string -> id
  id_of.reserve(n);
  std::string bytes;
  for (const auto& [key, value] : vocab.items()) {
    const std::string where =
        "tokenizer vocabulary '" + vocab_json_path + "': token \"" + quote_for_message(key) + "\"";
    if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() >= n) {
      return core::Status::error(where + " has id " + value.dump() +
                                 "; ids must be integers in [0, " + std::to_string(n) +
                                 "), one per token");
    }
    auto id = static_cast<int32_t>(value.get<int64_t>());
    if (seen[id]) {
      return core::Status::error(where + " reuses id " + std::to_string(id) +
                                 "; ids must be distinct and dense from 0");
    }
    if (!vocab_string_to_bytes(key, bytes)) {
      return core::Status::error(where +
                                 " has a character outside GPT-2's byte alphabet; is this a "
                                 "byte-level BPE vocab.json?");
    }
    seen[id] = true;
    token_bytes[id] = bytes;
    id_of.emplace(key, id);
  }
  auto eot_it = id_of.find(kEndOfText);
  int32_t eot = eot_it == id_of.end() ? -1 : eot_it->second;

  core::Result<std::string> merges_text = read_file(merges_txt_path, "tokenizer merges");
  if (!merges_text) return merges_text.status();
  std::vector<Merge> merges;
  std::istringstream lines(*merges_text);
  std::string line;
  for (int line_no = 1; std::getline(lines, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const std::string where =
        "tokenizer merges '" + merges_txt_path + "' line " + std::to_string(line_no);
    size_t space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos) {
      return core::Status::error(where + ": \"" + quote_for_message(line) +
                                 "\" is not two tokens separated by one space; expected GPT-2's "
                                 "merges.txt: one merge \"left right\" per line");
    }
    std::string left = line.substr(0, space), right = line.substr(space + 1);
    auto l = id_of.find(left), r = id_of.find(right), m = id_of.find(left + right);
    if (l == id_of.end() || r == id_of.end() || m == id_of.end()) {
      const std::string& missing = l == id_of.end()   ? left
                                   : r == id_of.end() ? right
                                                      : left + right;
      return core::Status::error(where + ": token \"" + quote_for_message(missing) +
                                 "\" is not in '" + vocab_json_path +
                                 "'; are the vocab and merges files a pair?");
    }
    merges.push_back({l->second, r->second, m->second});
  }
  return from_parts(std::move(token_bytes), std::move(merges), eot,
                    "'" + vocab_json_path + "' + '" + merges_txt_path + "'");
}

core::Result<Tokenizer> Tokenizer::load_prefix(const std::string& prefix) {
  return load(prefix + ".vocab.json", prefix + ".merges.txt");
}

Tokenizer Tokenizer::train(std::string_view text, int vocab_size) {
  TESSERA_ASSERT(vocab_size >= 257, "training a tokenizer: vocab_size must be >= 257");
  std::vector<BpeMerge> learned = train_bpe_merges(text, vocab_size - 257);
  std::vector<std::string> token_bytes(256);
  for (int b = 0; b < 256; ++b) token_bytes[b] = std::string(1, static_cast<char>(b));
  std::vector<Merge> merges;
  merges.reserve(learned.size());
  for (const BpeMerge& m : learned) {
    const auto result = static_cast<int32_t>(token_bytes.size());
    token_bytes.push_back(token_bytes[m.left] + token_bytes[m.right]);
    merges.push_back({m.left, m.right, result});
  }
  const auto eot = static_cast<int32_t>(token_bytes.size());
  token_bytes.emplace_back(kEndOfText);
  core::Result<Tokenizer> tok =
      from_parts(std::move(token_bytes), std::move(merges), eot, "trained");
  // Invariant: a trained vocabulary holds every byte and distinct merges by construction.
  TESSERA_ASSERT(tok.is_ok(), "assembling a trained tokenizer");
  return std::move(tok).value();
}

core::Status Tokenizer::save_prefix(const std::string& prefix) const {
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (size_t id = 0; id < token_bytes_.size(); ++id) {
    vocab[bytes_to_vocab_string(token_bytes_[id])] = id;
  }
  TESSERA_RETURN_IF_ERROR(write_file(prefix + ".vocab.json", vocab.dump() + "\n"));
  std::string merges = "#version: 0.2\n";
  for (const Merge& m : merges_) {
    merges += bytes_to_vocab_string(token_bytes_[m.left]);
    merges += ' ';
    merges += bytes_to_vocab_string(token_bytes_[m.right]);
    merges += '\n';
  }
  return write_file(prefix + ".merges.txt", merges);
}

void Tokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  // GPT-2's bpe() merges every occurrence of the lowest-ranked adjacent pair, left to right, and
  // repeats: quadratic in the word's length. Here each step merges the leftmost occurrence of the
  // lowest-ranked pair, found with a heap over a linked list: O(n log n). The two agree whenever a
  // merge's parts exist before it (true of trained files, GPT-2's included): a merge's result R
  // only forms pairs with ranks above its own, and R equals neither part, so the occurrences of
  // the current pair are taken in the same left-to-right, non-overlapping order.
  struct Node {
    int32_t id;    // -1 once merged into its left neighbour
    int32_t next;  // index of the next live node, -1 at the end
    int32_t prev;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;  // left node
    int32_t left;
    int32_t right;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  const auto n = static_cast<int32_t>(word.size());
  std::vector<Node> nodes(n);
  for (int32_t i = 0; i < n; ++i) {
    nodes[i] = {byte_token_[static_cast<uint8_t>(word[i])], i + 1 < n ? i + 1 : -1, i - 1};
  }
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push_pair = [&](int32_t pos) {
    const int32_t next = nodes[pos].next;
    if (next < 0) return;
    auto it = merge_rules_.find(pair_key(nodes[pos].id, nodes[next].id));
    if (it != merge_rules_.end()) heap.push({it->second.rank, pos, nodes[pos].id, nodes[next].id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Node& a = nodes[c.pos];
    // Skip entries made stale by an earlier merge (a dead node or changed neighbours).
    if (a.id != c.left || a.next < 0 || nodes[a.next].id != c.right) continue;
    Node& b = nodes[a.next];
    a.id = merges_[c.rank].result;
    a.next = b.next;
    if (b.next >= 0) nodes[b.next].prev = c.pos;
    b.id = -1;
    if (a.prev >= 0) push_pair(a.prev);
    push_pair(c.pos);
  }
  for (int32_t i = 0; i >= 0 && i < n; i = nodes[i].next) out.push_back(nodes[i].id);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  // Per-call cache of pre-token -> ids (keys view `text`); bounded so huge inputs stay in memory.
  constexpr size_t kMaxCacheEntries = size_t{1} << 20;
  std::unordered_map<std::string_view, std::vector<int32_t>> cache;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  pre_token_regex().for_each_piece(text, [&](std::string_view piece) {
    if (piece.size() == 1) {
      out.push_back(byte_token_[static_cast<uint8_t>(piece[0])]);
      return;
    }
    auto it = cache.find(piece);
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
    size_t before = out.size();
    encode_word(piece, out);
    if (cache.size() >= kMaxCacheEntries) cache.clear();
    cache.emplace(
        piece, std::vector<int32_t>(out.begin() + static_cast<std::ptrdiff_t>(before), out.end()));
  });
  return out;
}

std::string Tokenizer::decode_token(int32_t token) const {
  if (token < 0 || token >= vocab_size()) return kReplacementChar;
  return token_bytes_[token];
}

std::string Tokenizer::decode(const std::vector<int32_t>& tokens) const {
  std::string out;
  for (int32_t t : tokens) {
    if (t < 0 || t >= vocab_size()) {
      out += kReplacementChar;
    } else {
      out += token_bytes_[t];
    }
  }
  return out;
}

core::Result<Tokenizer> load_tokenizer_for_model(const std::string& prefix, int64_t vocab_size) {
  auto tokenizer = Tokenizer::load_prefix(prefix);
  if (!tokenizer) return tokenizer.status();
  if (tokenizer->vocab_size() != vocab_size) {
    return core::Status::error("tokenizer '" + prefix + "' has " +
                               std::to_string(tokenizer->vocab_size()) + " tokens, the model " +
                               std::to_string(vocab_size) +
                               "; pass the tokenizer the model was trained with (--tokenizer)");
  }
  return tokenizer;
}

}  // namespace tessera::data
