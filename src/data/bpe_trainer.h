// Byte-level BPE training (Sennrich et al. 2016, as GPT-2 uses it): counts pre-tokens once, then
// merges the most frequent adjacent pair, updating pair counts only in the words that hold it.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace tessera::data {

// One learned merge; merge k creates token 256 + k from (left, right). Bytes are tokens 0..255.
struct BpeMerge {
  int32_t left = 0;
  int32_t right = 0;
};

// Learns up to `num_merges` merges over the GPT-2 pre-tokens of `text` (merges never cross a
// pre-token). Deterministic: the highest pair count wins; ties go to the smaller left id, then the
// smaller right id. A pair whose bytes equal an existing token is never merged, so every token's
// bytes are distinct. Returns fewer merges when no pair is left.
std::vector<BpeMerge> train_bpe_merges(std::string_view text, int num_merges);

}  // namespace tessera::data
