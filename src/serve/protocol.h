// What world rank 0 tells its tp group each serving iteration: the requests that join the batch,
// the ones that leave it, and whether to shut down. Every tp rank applies exactly these changes
// to its own Generator before the iteration's step(), so all ranks run the same batched decode.
// Wire format: a flat byte buffer in host byte order (every rank runs the same binary on the same
// kind of machine), see protocol.cpp; a broadcast sends its length first (tp_channel.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "generate/generator.h"

namespace tessera::serve {

// A request that joins the decode batch this iteration.
struct Admission {
  uint64_t request_id = 0;
  std::vector<int32_t> prompt;
  generate::GenerateOptions options;  // use_kv_cache is always true on the wire
};

struct IterationChanges {
  std::vector<uint64_t> cancel;  // running requests to remove, applied first
  std::vector<Admission> admit;  // then these join, in this order
  bool shutdown = false;         // after applying the above, leave the serving loop

  bool empty() const { return cancel.empty() && admit.empty() && !shutdown; }
};

// Serialises `changes`: magic "TSV1", shutdown byte, cancel count and ids, admission count and
// per admission (id, max_tokens, stop_at_eot, eot_token, temperature, top_k, top_p, seed,
// logprobs, prompt length, prompt ids).
std::vector<uint8_t> encode_changes(const IterationChanges& changes);
// The inverse; an error names what is wrong (bad magic, truncated buffer, trailing bytes).
core::Result<IterationChanges> decode_changes(const uint8_t* data, size_t size);

}  // namespace tessera::serve
