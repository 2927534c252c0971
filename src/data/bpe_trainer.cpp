// Byte-level BPE training with incrementally updated pair counts and a lazy max-heap: each merge
// costs time proportional to the words that contain its pair, not to the corpus.
#include "data/bpe_trainer.h"

#include <queue>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "data/tokenizer.h"

namespace tessera::data {
namespace {

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// A heap entry: a pair and the count it had when pushed (it may since have dropped).
struct Candidate {
  int64_t count = 0;
  int32_t left = 0;
  int32_t right = 0;
  // std::priority_queue pops the largest: highest count, then smallest (left, right).
  bool operator<(const Candidate& other) const {
    if (count != other.count) return count < other.count;
    if (left != other.left) return left > other.left;
    return right > other.right;
  }
};

}  // namespace

std::vector<BpeMerge> train_bpe_merges(std::string_view text, int num_merges) {
  // Distinct pre-tokens in first-seen order (so the run is independent of hash order) with counts.
  std::unordered_map<std::string_view, int32_t> word_index;
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> word_counts;
  for (std::string_view piece : pretokenize(text)) {
    auto [it, inserted] = word_index.try_emplace(piece, static_cast<int32_t>(words.size()));
    if (inserted) {
      words.emplace_back(piece.begin(), piece.end());
      for (int32_t& id : words.back()) id &= 0xFF;  // char may be signed: ids are bytes 0..255
      word_counts.push_back(0);
    }
    ++word_counts[it->second];
  }

  // pair_count: occurrences of each adjacent pair, weighted by word count.
  // pair_words: words that held the pair at some point (may be stale; checked on use).
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words;
  for (int32_t w = 0; w < static_cast<int32_t>(words.size()); ++w) {
    const std::vector<int32_t>& ids = words[w];
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      uint64_t key = pair_key(ids[i], ids[i + 1]);
      pair_count[key] += word_counts[w];
      std::vector<int32_t>& holders = pair_words[key];
      if (holders.empty() || holders.back() != w) holders.push_back(w);  // once per word
    }
  }
  std::priority_queue<Candidate> heap;
  for (const auto& [key, count] : pair_count) {
    heap.push({count, static_cast<int32_t>(key >> 32), static_cast<int32_t>(key & 0xFFFFFFFFu)});
  }

  std::vector<std::string> token_bytes(256);
  for (int b = 0; b < 256; ++b) token_bytes[b] = std::string(1, static_cast<char>(b));
  std::unordered_set<std::string> known_tokens(token_bytes.begin(), token_bytes.end());

  auto add_count = [&](uint64_t key, int64_t delta) {
    auto it = pair_count.find(key);
    if (it == pair_count.end()) {
      // Invariant: only pairs present in some word are subtracted.
      TESSERA_ASSERT(delta > 0, "training BPE: a pair count would go negative");
      pair_count.emplace(key, delta);
      return;
    }
    it->second += delta;
    if (it->second == 0) pair_count.erase(it);
  };

  std::unordered_set<uint64_t> new_pairs;
  // A pair holding the newest token: count it, list word w once, and queue it for the heap.
  auto add_new_pair = [&](uint64_t key, int32_t w, int64_t c) {
    add_count(key, c);
    std::vector<int32_t>& holders = pair_words[key];
    if (holders.empty() || holders.back() != w) holders.push_back(w);
    new_pairs.insert(key);
  };

  std::vector<BpeMerge> merges;
  std::vector<int32_t> merged;
  std::vector<size_t> at;
  while (static_cast<int>(merges.size()) < num_merges && !heap.empty()) {
    Candidate top = heap.top();
    heap.pop();
    uint64_t key = pair_key(top.left, top.right);
    auto count_it = pair_count.find(key);
    int64_t current = count_it == pair_count.end() ? 0 : count_it->second;
    // Invariant: every live pair has a heap entry with a count >= its current count, so the
    // first popped entry whose count is current is the true maximum under the tie rule.
    if (current != top.count) {
      if (current > 0) heap.push({current, top.left, top.right});
      continue;
    }
    std::string bytes = token_bytes[top.left] + token_bytes[top.right];
    if (!known_tokens.insert(bytes).second) continue;  // would duplicate a token; never merged
    const int32_t new_id = static_cast<int32_t>(token_bytes.size());
    token_bytes.push_back(std::move(bytes));
    merges.push_back({top.left, top.right});

    std::vector<int32_t> holders = std::move(pair_words[key]);
    pair_words.erase(key);
    new_pairs.clear();
    for (int32_t w : holders) {
      std::vector<int32_t>& ids = words[w];
      // Greedy left-to-right, non-overlapping occurrences of (left, right) at `at`.
      merged.clear();
      at.clear();
      for (size_t i = 0; i < ids.size();) {
        if (i + 1 < ids.size() && ids[i] == top.left && ids[i + 1] == top.right) {
          at.push_back(i);
          merged.push_back(new_id);
          i += 2;
        } else {
          merged.push_back(ids[i]);
          i += 1;
        }
      }
      if (at.empty()) continue;  // stale listing: an earlier merge took the pair from this word
      // Only pairs touching an occurrence change. Old pairs at indices i-1, i, i+1 of each
      // occurrence i go; every pair holding new_id comes; all other pairs are the same tokens
      // side by side as before. Cost: O(occurrences) hash updates plus the scan above.
      const int64_t c = word_counts[w];
      size_t next_unremoved = 0;  // old pair indices below this are already subtracted
      for (size_t i : at) {
        for (size_t j = i == 0 ? 0 : i - 1; j <= i + 1 && j + 1 < ids.size(); ++j) {
          if (j < next_unremoved) continue;
          add_count(pair_key(ids[j], ids[j + 1]), -c);
          next_unremoved = j + 1;
        }
      }
      for (size_t k = 0; k < merged.size(); ++k) {
        if (merged[k] != new_id) continue;
        // (x, new) from each new token, (new, y) unless y is new too: a (new, new) pair is
        // counted once, as the (x, new) of its right token.
        if (k > 0) add_new_pair(pair_key(merged[k - 1], new_id), w, c);
        if (k + 1 < merged.size() && merged[k + 1] != new_id) {
          add_new_pair(pair_key(new_id, merged[k + 1]), w, c);
        }
      }
      ids.swap(merged);
    }
    for (uint64_t k : new_pairs) {
      auto it = pair_count.find(k);
      if (it == pair_count.end()) continue;
      heap.push({it->second, static_cast<int32_t>(k >> 32), static_cast<int32_t>(k & 0xFFFFFFFFu)});
    }
  }
  return merges;
}

}  // namespace tessera::data
