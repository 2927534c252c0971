// GPT-2 byte-level BPE tokenizer (Radford et al. 2019): GPT-2's pre-tokenisation regex, the
// bytes<->unicode alphabet of vocab.json, merges applied by rank. Loads GPT-2's files, trains its
// own merges (bpe_trainer.h) and saves them in the same format. Any byte string round-trips.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/status.h"

namespace tessera::data {

// Splits `text` into GPT-2 pre-tokens: 's 't 're 've 'm 'll 'd | ?\p{L}+ | ?\p{N}+ |
// ?[^\s\p{L}\p{N}]+ | \s+(?!\S) | \s+, with Unicode classes (PCRE2, UTF + UCP). The regex runs
// over valid UTF-8 only; each byte of an invalid sequence becomes a piece of its own, so the
// pieces always concatenate back to `text`. The views point into `text`. Thread-safe.
std::vector<std::string_view> pretokenize(std::string_view text);

// GPT-2's vocab.json alphabet: byte b as one code point (printable bytes map to themselves, the
// others to 256 + n in byte order). Returns the UTF-8 of that code point.
std::string byte_to_unicode(uint8_t b);

// A GPT-2 byte-level BPE vocabulary. Copyable; every method is const and thread-safe.
class Tokenizer {
 public:
  // Reads GPT-2's vocab.json (token string -> id, ids dense from 0) and merges.txt ("a b" per
  // line in rank order, an optional "#version" line first). The vocabulary must hold all 256
  // single bytes and "<|endoftext|>".
  static core::Result<Tokenizer> load(const std::string& vocab_json_path,
                                      const std::string& merges_txt_path);
  // load(prefix + ".vocab.json", prefix + ".merges.txt").
  static core::Result<Tokenizer> load_prefix(const std::string& prefix);

  // Trains merges on `text` until the vocabulary holds vocab_size tokens: the 256 bytes (id =
  // byte value), then one token per merge, then "<|endoftext|>" last. Deterministic: the most
  // frequent pair wins, ties go to the smaller (left id, right id). Stops early, with a smaller
  // vocabulary, if every pre-token is already a single token. Precondition: vocab_size >= 257.
  static Tokenizer train(std::string_view text, int vocab_size);

  // Writes <prefix>.vocab.json and <prefix>.merges.txt in GPT-2's format.
  core::Status save_prefix(const std::string& prefix) const;

  // Plain text to ids. "<|endoftext|>" inside `text` is ordinary text, never eot_token().
  std::vector<int32_t> encode(std::string_view text) const;
  // Ids to bytes (concatenated decode_token). An id outside [0, vocab_size()) decodes to U+FFFD
  // ("\xEF\xBF\xBD") rather than failing, so streaming output never stops on a bad sample.
  std::string decode(const std::vector<int32_t>& tokens) const;
  // The raw bytes of one token (may be part of a UTF-8 character); eot_token() gives
  // "<|endoftext|>"; an invalid id gives U+FFFD.
  std::string decode_token(int32_t token) const;

  int vocab_size() const { return static_cast<int>(token_bytes_.size()); }  // with <|endoftext|>
  int32_t eot_token() const { return eot_token_; }
  int num_merges() const { return static_cast<int>(merges_.size()); }

 private:
  struct Merge {
    int32_t left = 0;
    int32_t right = 0;
    int32_t result = 0;
  };
  struct MergeRule {
    int32_t rank = 0;
    int32_t result = 0;
  };

  Tokenizer() = default;  // only through load, load_prefix or train
  // Builds the lookup tables; returns an error if a byte is missing or a merge is inconsistent.
  static core::Result<Tokenizer> from_parts(std::vector<std::string> token_bytes,
                                            std::vector<Merge> merges, int32_t eot_token,
                                            const std::string& source);
  // BPE on one pre-token, appending its ids to `out`.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  std::vector<std::string> token_bytes_;                 // id -> bytes
  std::vector<Merge> merges_;                            // rank order
  std::array<int32_t, 256> byte_token_{};                // byte -> id of its single-byte token
  std::unordered_map<uint64_t, MergeRule> merge_rules_;  // (left << 32 | right) -> rule
  int32_t eot_token_ = -1;
};

// The tokenizer at `prefix` for a model of `vocab_size` tokens; a tokenizer of another size is an
// error naming both sizes and the fix (--tokenizer: the one the model was trained with).
core::Result<Tokenizer> load_tokenizer_for_model(const std::string& prefix, int64_t vocab_size);

}  // namespace tessera::data
