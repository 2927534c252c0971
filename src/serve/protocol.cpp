// Wire format of IterationChanges; see protocol.h.
#include "serve/protocol.h"

#include "serve/wire_codec.h"

namespace tessera::serve {
namespace {

constexpr uint32_t kMagic = 0x31565354;  // "TSV1" read as little-endian bytes

}  // namespace

std::vector<uint8_t> encode_changes(const IterationChanges& changes) {
  WireWriter w;
  w.put<uint32_t>(kMagic);
  w.put<uint8_t>(changes.shutdown ? 1 : 0);
  w.put_array(changes.cancel);
  w.put<uint32_t>(static_cast<uint32_t>(changes.admit.size()));
  for (const Admission& a : changes.admit) {
    const generate::GenerateOptions& o = a.options;
    w.put<uint64_t>(a.request_id);
    w.put<int32_t>(o.max_tokens);
    w.put<uint8_t>(o.stop_at_eot ? 1 : 0);
    w.put<int32_t>(o.eot_token);
    w.put<float>(o.sampling.temperature);
    w.put<int32_t>(o.sampling.top_k);
    w.put<float>(o.sampling.top_p);
    w.put<uint64_t>(o.sampling.seed);
    w.put<int32_t>(o.logprobs);
    w.put_array(a.prompt);
  }
  return w.take();
}

core::Result<IterationChanges> decode_changes(const uint8_t* data, size_t size) {
  const auto truncated = [size](const char* what) {
    return core::Status::error("serving iteration message of " + std::to_string(size) +
                               " bytes ends inside " + what +
                               "; every tp rank must run the same tessera-serve binary");
  };
  WireReader r(data, size);
  uint32_t magic = 0;
  if (!r.get(&magic) || magic != kMagic) {
    return core::Status::error(
        "serving iteration message does not start with TSV1; every tp rank must run the same "
        "tessera-serve binary");
  }
  IterationChanges c;
  uint8_t shutdown = 0;
  if (!r.get(&shutdown)) return truncated("the shutdown flag");
  c.shutdown = shutdown != 0;
  if (!r.get_array(&c.cancel)) return truncated("the cancellations");
  uint32_t n_admit = 0;
  if (!r.get(&n_admit)) return truncated("the admission count");
  for (uint32_t i = 0; i < n_admit; ++i) {
    Admission a;
    generate::GenerateOptions& o = a.options;
    uint8_t stop_at_eot = 0;
    if (!r.get(&a.request_id) || !r.get(&o.max_tokens) || !r.get(&stop_at_eot) ||
        !r.get(&o.eot_token) || !r.get(&o.sampling.temperature) || !r.get(&o.sampling.top_k) ||
        !r.get(&o.sampling.top_p) || !r.get(&o.sampling.seed) || !r.get(&o.logprobs) ||
        !r.get_array(&a.prompt)) {
      return truncated("an admission");
    }
    o.stop_at_eot = stop_at_eot != 0;
    o.use_kv_cache = true;
    c.admit.push_back(std::move(a));
  }
  if (r.remaining() != 0) {
    return core::Status::error("serving iteration message has " + std::to_string(r.remaining()) +
                               " bytes after its end; every tp rank must run the same "
                               "tessera-serve binary");
  }
  return c;
}

}  // namespace tessera::serve
