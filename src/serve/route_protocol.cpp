// Wire format of ReplicaReport; see route_protocol.h.
#include "serve/route_protocol.h"

#include <string>
#include <type_traits>

#include "serve/wire_codec.h"

namespace tessera::serve {
namespace {

constexpr uint32_t kMagic = 0x31525354;        // "TSR1" read as little-endian bytes
constexpr uint32_t kRouterMagic = 0x31515354;  // "TSQ1"
static_assert(std::is_trivially_copyable_v<Metrics>, "Metrics travels as its bytes");
static_assert(std::is_trivially_copyable_v<generate::TokenLogprobs>,
              "TokenLogprobs travels as its bytes");

}  // namespace

std::vector<uint8_t> encode_router_message(const RouterMessage& message) {
  WireWriter w;  // reserves: also keeps GCC 12's -Wstringop-overflow false positive quiet
  w.put<uint32_t>(kRouterMagic);
  w.put_array(message.stop);
  IterationChanges changes;
  changes.cancel = message.cancel;
  changes.admit = message.submit;
  changes.shutdown = message.drain;
  w.put_bytes(encode_changes(changes));
  return w.take();
}

core::Result<RouterMessage> decode_router_message(const uint8_t* data, size_t size) {
  WireReader r(data, size);
  uint32_t magic = 0;
  if (!r.get(&magic) || magic != kRouterMagic) {
    return core::Status::error("router message of " + std::to_string(size) +
                               " bytes does not start with TSQ1; every rank must run the same "
                               "tessera-serve binary");
  }
  RouterMessage m;
  if (!r.get_array(&m.stop)) {
    return core::Status::error("router message of " + std::to_string(size) +
                               " bytes ends inside its stop list; every rank must run the same "
                               "tessera-serve binary");
  }
  auto changes = decode_changes(r.rest(), r.remaining());
  if (!changes) return changes.status();
  m.submit = std::move(changes->admit);
  m.cancel = std::move(changes->cancel);
  m.drain = changes->shutdown;
  return m;
}

std::vector<uint8_t> encode_report(const ReplicaReport& report) {
  WireWriter w(sizeof(Metrics) + 64);  // also keeps GCC 12's -Wstringop-overflow quiet
  w.put<uint32_t>(kMagic);
  w.put<uint8_t>(report.bye ? 1 : 0);
  w.put(report.metrics);
  w.put<uint32_t>(static_cast<uint32_t>(report.events.size()));
  for (const RequestEvent& e : report.events) {
    w.put<uint64_t>(e.request_id);
    w.put<int32_t>(e.token);
    w.put<uint8_t>(static_cast<uint8_t>(e.finish));
    w.put<int64_t>(e.usage.prompt_tokens);
    w.put<int64_t>(e.usage.completion_tokens);
    w.put<int64_t>(e.usage.cached_tokens);
    w.put_string(e.error);
    w.put<uint8_t>(e.has_logprobs ? 1 : 0);
    if (e.has_logprobs) w.put(e.logprobs);
  }
  return w.take();
}

core::Result<ReplicaReport> decode_report(const uint8_t* data, size_t size) {
  const auto damaged = [size](const std::string& what) {
    return core::Status::error("replica report of " + std::to_string(size) + " bytes " + what +
                               "; every rank must run the same tessera-serve binary");
  };
  WireReader r(data, size);
  uint32_t magic = 0;
  if (!r.get(&magic) || magic != kMagic) return damaged("does not start with TSR1");
  ReplicaReport report;
  uint8_t bye = 0;
  uint32_t n = 0;
  if (!r.get(&bye) || !r.get(&report.metrics) || !r.get(&n)) {
    return damaged("ends inside its header");
  }
  report.bye = bye != 0;
  for (uint32_t i = 0; i < n; ++i) {
    RequestEvent e;
    uint8_t finish = 0, has_logprobs = 0;
    if (!r.get(&e.request_id) || !r.get(&e.token) || !r.get(&finish) ||
        !r.get(&e.usage.prompt_tokens) || !r.get(&e.usage.completion_tokens) ||
        !r.get(&e.usage.cached_tokens) || !r.get_string(&e.error) || !r.get(&has_logprobs) ||
        (has_logprobs != 0 && !r.get(&e.logprobs))) {
      return damaged("ends inside event " + std::to_string(i));
    }
    e.has_logprobs = has_logprobs != 0;
    if (finish > static_cast<uint8_t>(Finish::kError)) {
      return damaged("names finish " + std::to_string(finish) + " in event " + std::to_string(i));
    }
    e.finish = static_cast<Finish>(finish);
    report.events.push_back(std::move(e));
  }
  if (r.remaining() != 0) {
    return damaged("has " + std::to_string(r.remaining()) + " bytes after its end");
  }
  return report;
}

}  // namespace tessera::serve
