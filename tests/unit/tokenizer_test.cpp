// Tokenizer: GPT-2 pre-tokenisation, byte-exact round trips (also of invalid UTF-8), loading the
// hand-made GPT-2-format files in tests/data, deterministic training and save/load.
#include "data/tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "scratch_dir.h"
#include "test_data.h"

namespace tessera::data {
namespace {

using tessera::testing::kDataDir;

std::vector<std::string> pieces(std::string_view text) {
  std::vector<std::string> out;
  for (std::string_view p : pretokenize(text)) out.emplace_back(p);
  return out;
}

Tokenizer tiny_gpt2() {
  core::Result<Tokenizer> tok =
      Tokenizer::load(kDataDir + "/tiny_gpt2_vocab.json", kDataDir + "/tiny_gpt2_merges.txt");
  EXPECT_TRUE(tok.is_ok()) << tok.status().message();
  return std::move(tok).value();
}

using tessera::testing::temp_path;

const char* kSampleText =
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. "
    "resolved.\n\nFirst Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n"
    "We'll see; they're here, it's 1603 and I've 42 reasons you'd know. I'm done.\n";

const std::vector<std::string> kUnicodeSamples = {
    "",
    "Hello world's  123!!",
    "naïve café — déjà vu; Ünïcödé",
    "Привет, мир! Καλημέρα κόσμε. 你好，世界。こんにちは 안녕하세요",
    "emoji: 😀👍🏽 👨‍👩‍👧‍👦 🇬🇧 flags",
    "combining: e\xCC\x81 a\xCC\x8A n\xCC\x83 (e + U+0301)",
    "   leading spaces, tabs\t\tand\r\nnewlines\n\n\n   trailing   ",
    "contractions: it's they're we've I'm we'll he'd don't IT'S",
    "digits ١٢٣ ४५६ 12345678901234567890 3.14159",
    "<|endoftext|> is plain text here",
    "\xEF\xBB\xBF"
    "BOM, zero\xE2\x80\x8Bwidth, nbsp\xC2\xA0here, U+10FFFF \xF4\x8F\xBF\xBF",
};

TEST(Tokenizer, PretokenizeSplitsLikeGpt2) {
  EXPECT_EQ(pieces("Hello world's  123!!"),
            (std::vector<std::string>{"Hello", " world", "'s", " ", " 123", "!!"}));
  // Whitespace before a word leaves its last space to the word; a final run stays whole.
  EXPECT_EQ(pieces("a   b\n\nok   "),
            (std::vector<std::string>{"a", "  ", " b", "\n", "\n", "ok", "   "}));
  EXPECT_EQ(pieces("I'm they'll we'd"),
            (std::vector<std::string>{"I", "'m", " they", "'ll", " we", "'d"}));
  // Unicode letters and numbers, not just ASCII: a space joins the following letter/number run.
  EXPECT_EQ(pieces("héllo wörld 你好 ١٢٣"),
            (std::vector<std::string>{"héllo", " wörld", " 你好", " ١٢٣"}));
  // A combining mark is neither letter nor number: it is punctuation-like, as in GPT-2.
  EXPECT_EQ(pieces("e\xCC\x81!"), (std::vector<std::string>{"e", "\xCC\x81!"}));
}

TEST(Tokenizer, PretokenizeKeepsInvalidUtf8BytesAsPieces) {
  EXPECT_EQ(pieces("ab\xFF"
                   "cd"),
            (std::vector<std::string>{"ab", "\xFF", "cd"}));
  // A truncated three-byte sequence: each of its bytes stands alone; the text around is split.
  EXPECT_EQ(pieces("x \xE2\x82 y"), (std::vector<std::string>{"x", " ", "\xE2", "\x82", " y"}));
  // Surrogates encoded in UTF-8 (CESU) are invalid too.
  EXPECT_EQ(pieces("\xED\xA0\x80z"), (std::vector<std::string>{"\xED", "\xA0", "\x80", "z"}));
}

TEST(Tokenizer, ByteAlphabetMatchesGpt2) {
  EXPECT_EQ(byte_to_unicode('A'), "A");
  EXPECT_EQ(byte_to_unicode(' '), "\xC4\xA0");   // U+0120 'Ġ' = 256 + 32
  EXPECT_EQ(byte_to_unicode('\n'), "\xC4\x8A");  // U+010A 'Ċ' = 256 + 10
  EXPECT_EQ(byte_to_unicode(0xAD), "\xC5\x83");  // soft hyphen, the last unprintable: U+0143
  EXPECT_EQ(byte_to_unicode(0xFF), "\xC3\xBF");  // printable: itself
}

TEST(Tokenizer, LoadsGpt2FormatFilesWithExpectedIds) {
  Tokenizer tok = tiny_gpt2();
  EXPECT_EQ(tok.vocab_size(), 270);
  EXPECT_EQ(tok.eot_token(), 269);
  EXPECT_EQ(tok.num_merges(), 13);
  // Ids worked by hand from tests/data: bytes take GPT-2's ids ('!' = 0, 'H' = 39, 'i' = 72,
  // ' ' = 220), then merges 256.. in file order ("Hello" = 262, "Ġthe" = 258, "Ġworld" = 267,
  // "'s" = 268).
  EXPECT_EQ(tok.encode("Hello the world's!"), (std::vector<int32_t>{262, 258, 267, 268, 0}));
  EXPECT_EQ(tok.encode("Hello  world"), (std::vector<int32_t>{262, 220, 267}));
  EXPECT_EQ(tok.encode("Hi"), (std::vector<int32_t>{39, 72}));
  // "ell" before "Hell": rank order, not length, decides ("yell" = y + ell).
  EXPECT_EQ(tok.encode("yell"), (std::vector<int32_t>{88, 260}));
  EXPECT_EQ(tok.decode({262, 258, 267, 268, 0}), "Hello the world's!");
  EXPECT_EQ(tok.decode_token(267), " world");
  EXPECT_EQ(tok.decode_token(tok.eot_token()), "<|endoftext|>");
}

TEST(Tokenizer, EncodesLongWordsAndRepeatsLikeShortOnes) {
  Tokenizer tok = tiny_gpt2();
  // One pre-token of 5,000 bytes: every "Hello" still becomes 262, whatever its position.
  std::string word;
  for (int i = 0; i < 1000; ++i) word += "Hello";
  std::vector<int32_t> ids = tok.encode(word);
  EXPECT_EQ(ids, std::vector<int32_t>(1000, 262));
  // Overlapping pairs merge left to right: "lll" = ll + l, "llll" = ll + ll.
  EXPECT_EQ(tok.encode("lll"), (std::vector<int32_t>{259, 75}));
  EXPECT_EQ(tok.encode("llll"), (std::vector<int32_t>{259, 259}));
  EXPECT_EQ(tok.encode("Hellllo"), (std::vector<int32_t>{261, 259, 78}));
}

TEST(Tokenizer, EndOfTextInTextIsNotSpecial) {
  Tokenizer tok = tiny_gpt2();
  std::vector<int32_t> ids = tok.encode("a<|endoftext|>b");
  for (int32_t id : ids) EXPECT_NE(id, tok.eot_token());
  EXPECT_EQ(ids.front(), 64);  // 'a'
  EXPECT_EQ(tok.decode(ids), "a<|endoftext|>b");
}

TEST(Tokenizer, DecodeReplacesInvalidIds) {
  Tokenizer tok = tiny_gpt2();
  EXPECT_EQ(tok.decode({39, -1, 270, 72}), "H\xEF\xBF\xBD\xEF\xBF\xBDi");
  EXPECT_EQ(tok.decode_token(100000), "\xEF\xBF\xBD");
}

TEST(Tokenizer, RoundTripsUnicodeText) {
  Tokenizer gpt2 = tiny_gpt2();
  Tokenizer trained = Tokenizer::train(kSampleText, 400);
  for (const std::string& s : kUnicodeSamples) {
    EXPECT_EQ(gpt2.decode(gpt2.encode(s)), s);
    EXPECT_EQ(trained.decode(trained.encode(s)), s);
  }
}

TEST(Tokenizer, RoundTripsRandomBytesIncludingInvalidUtf8) {
  Tokenizer gpt2 = tiny_gpt2();
  Tokenizer trained = Tokenizer::train(kSampleText, 400);
  std::mt19937 rng(1234);
  // Bytes biased towards UTF-8 lead and continuation bytes, so broken sequences are common.
  const std::string alphabet = "ab '\n\t1\x80\xBF\xC2\xC3\xE2\xED\xF0\xF4\xF8\xFF";
  for (int trial = 0; trial < 400; ++trial) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) {
      c = (trial % 2 == 0) ? static_cast<char>(rng() & 0xFF) : alphabet[rng() % alphabet.size()];
    }
    ASSERT_EQ(gpt2.decode(gpt2.encode(s)), s) << "trial " << trial;
    ASSERT_EQ(trained.decode(trained.encode(s)), s) << "trial " << trial;
    std::string joined;
    for (std::string_view p : pretokenize(s)) joined += p;
    ASSERT_EQ(joined, s) << "trial " << trial;
  }
}

TEST(Tokenizer, TrainLearnsExpectedMergesInOrder) {
  // Pre-tokens "ab" x1, " ab" x2, " cd" x1. Pair counts: (a,b) 3, (' ',a) 2, (' ',c) 1, (c,d) 1.
  // Merge 1: (a,b). Then (' ',ab) 2. Then the tie (' ',c) vs (c,d) at 1 goes to the smaller
  // left id ' ' = 32; then (' c', d). Then no pair is left: 256 + 4 + 1 tokens.
  Tokenizer tok = Tokenizer::train("ab ab ab cd", 1000);
  ASSERT_EQ(tok.vocab_size(), 261);
  EXPECT_EQ(tok.decode_token(256), "ab");
  EXPECT_EQ(tok.decode_token(257), " ab");
  EXPECT_EQ(tok.decode_token(258), " c");
  EXPECT_EQ(tok.decode_token(259), " cd");
  EXPECT_EQ(tok.eot_token(), 260);
  EXPECT_EQ(tok.decode_token(260), "<|endoftext|>");
  EXPECT_EQ(tok.encode("ab cd ab"), (std::vector<int32_t>{256, 259, 257}));
  EXPECT_EQ(tok.decode_token('A'), "A");  // trained bytes: id = byte value
}

TEST(Tokenizer, TrainReachesRequestedVocabSize) {
  for (int vocab_size : {257, 258, 300, 380}) {
    Tokenizer tok = Tokenizer::train(kSampleText, vocab_size);
    EXPECT_EQ(tok.vocab_size(), vocab_size);
    EXPECT_EQ(tok.eot_token(), vocab_size - 1);
    EXPECT_EQ(tok.num_merges(), vocab_size - 257);
  }
}

TEST(Tokenizer, TrainIsDeterministic) {
  Tokenizer a = Tokenizer::train(kSampleText, 380);
  Tokenizer b = Tokenizer::train(kSampleText, 380);
  ASSERT_EQ(a.vocab_size(), b.vocab_size());
  for (int32_t id = 0; id < a.vocab_size(); ++id) {
    ASSERT_EQ(a.decode_token(id), b.decode_token(id)) << "token " << id;
  }
  // Learned tokens are distinct byte strings.
  std::set<std::string> distinct;
  for (int32_t id = 0; id < a.vocab_size(); ++id) distinct.insert(a.decode_token(id));
  EXPECT_EQ(static_cast<int>(distinct.size()), a.vocab_size());
  // The text compresses: frequent words became single tokens.
  EXPECT_LT(a.encode(kSampleText).size(), std::string(kSampleText).size() / 2);
}

TEST(Tokenizer, SaveLoadRoundTrip) {
  Tokenizer trained = Tokenizer::train(kSampleText, 380);
  const std::string prefix = temp_path("trained");
  ASSERT_TRUE(trained.save_prefix(prefix).is_ok());
  core::Result<Tokenizer> loaded = Tokenizer::load_prefix(prefix);
  ASSERT_TRUE(loaded.is_ok()) << loaded.status().message();
  ASSERT_EQ(loaded->vocab_size(), trained.vocab_size());
  EXPECT_EQ(loaded->eot_token(), trained.eot_token());
  EXPECT_EQ(loaded->num_merges(), trained.num_merges());
  for (int32_t id = 0; id < trained.vocab_size(); ++id) {
    ASSERT_EQ(loaded->decode_token(id), trained.decode_token(id)) << "token " << id;
  }
  for (const std::string& s : kUnicodeSamples) EXPECT_EQ(loaded->encode(s), trained.encode(s));
  EXPECT_EQ(loaded->encode(kSampleText), trained.encode(kSampleText));

  // GPT-2's own ids survive a save too.
  const std::string gpt2_prefix = temp_path("gpt2");
  ASSERT_TRUE(tiny_gpt2().save_prefix(gpt2_prefix).is_ok());
  core::Result<Tokenizer> gpt2 = Tokenizer::load_prefix(gpt2_prefix);
  ASSERT_TRUE(gpt2.is_ok()) << gpt2.status().message();
  EXPECT_EQ(gpt2->encode("Hello the world's!"), (std::vector<int32_t>{262, 258, 267, 268, 0}));
}

TEST(Tokenizer, LoadErrorsNameTheFileAndTheFix) {
  core::Result<Tokenizer> missing = Tokenizer::load_prefix("/nonexistent/tok");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("cannot open tokenizer vocabulary "
                                            "'/nonexistent/tok.vocab.json'"),
            std::string::npos)
      << missing.status().message();

  const std::string bad_merges = temp_path("bad.merges.txt");
  std::ofstream(bad_merges) << "#version: 0.2\nh e\nq zz\n";
  core::Result<Tokenizer> unknown = Tokenizer::load(kDataDir + "/tiny_gpt2_vocab.json", bad_merges);
  ASSERT_FALSE(unknown.is_ok());
  EXPECT_NE(unknown.status().message().find("line 3: token \"zz\" is not in"), std::string::npos)
      << unknown.status().message();

  const std::string bad_json = temp_path("bad.vocab.json");
  std::ofstream(bad_json) << "{\"a\": 0, \"b\": 0}";
  core::Result<Tokenizer> dup = Tokenizer::load(bad_json, bad_merges);
  ASSERT_FALSE(dup.is_ok());
  EXPECT_NE(dup.status().message().find("reuses id 0"), std::string::npos)
      << dup.status().message();

  const std::string no_bytes = temp_path("nobytes.vocab.json");
  const std::string no_merges = temp_path("nobytes.merges.txt");
  std::ofstream(no_bytes) << "{\"a\": 0, \"<|endoftext|>\": 1}";
  std::ofstream(no_merges) << "#version: 0.2\n";
  core::Result<Tokenizer> partial = Tokenizer::load(no_bytes, no_merges);
  ASSERT_FALSE(partial.is_ok());
  EXPECT_NE(partial.status().message().find("no token for byte 0x00"), std::string::npos)
      << partial.status().message();
}

TEST(Tokenizer, RoundTripsBundledCorpus) {
  std::ifstream in(std::string(TESSERA_SOURCE_DIR) + "/data/shakespeare.txt", std::ios::binary);
  ASSERT_TRUE(in.good()) << "data/shakespeare.txt is missing";
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(text.size(), 1000000u);
  Tokenizer tok = Tokenizer::train(std::string_view(text).substr(0, 200000), 512);
  std::vector<int32_t> ids = tok.encode(text);
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_LT(ids.size(), text.size() * 6 / 10);  // 255 merges: under 0.6 tokens per byte
}

}  // namespace
}  // namespace tessera::data
