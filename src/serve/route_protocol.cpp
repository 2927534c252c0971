// Wire format of ReplicaReport; see route_protocol.h.
#include "serve/route_protocol.h"

#include <cstring>
#include <string>
#include <type_traits>

namespace tessera::serve {
namespace {

constexpr uint32_t kMagic = 0x31525354;         // "TSR1" read as little-endian bytes
constexpr uint32_t kRouterMagic = 0x31515354;   // "TSQ1"
static_assert(std::is_trivially_copyable_v<Metrics>, "Metrics travels as its bytes");
static_assert(std::is_trivially_copyable_v<generate::TokenLogprobs>,
              "TokenLogprobs travels as its bytes");

template <typename T>
void put(std::vector<uint8_t>& out, const T& value) {
  static_assert(std::is_trivially_copyable_v<T>);
  const auto* p = reinterpret_cast<const uint8_t*>(&value);
  out.insert(out.end(), p, p + sizeof(T));
}

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  template <typename T>
  bool get(T* value) {
    if (size_ - pos_ < sizeof(T)) return false;
    std::memcpy(value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool get_string(std::string* s, uint32_t n) {
    if (size_ - pos_ < n) return false;
    s->assign(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return true;
  }
  size_t remaining() const { return size_ - pos_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace

std::vector<uint8_t> encode_router_message(const RouterMessage& message) {
  std::vector<uint8_t> out;
  out.reserve(64);  // also keeps GCC 12's -Wstringop-overflow false positive quiet
  put<uint32_t>(out, kRouterMagic);
  put<uint32_t>(out, static_cast<uint32_t>(message.stop.size()));
  for (uint64_t id : message.stop) put<uint64_t>(out, id);
  IterationChanges changes;
  changes.cancel = message.cancel;
  changes.admit = message.submit;
  changes.shutdown = message.drain;
  const std::vector<uint8_t> rest = encode_changes(changes);
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

core::Result<RouterMessage> decode_router_message(const uint8_t* data, size_t size) {
  Reader r(data, size);
  uint32_t magic = 0, n = 0;
  if (!r.get(&magic) || magic != kRouterMagic || !r.get(&n)) {
    return core::Status::error("router message of " + std::to_string(size) +
                               " bytes does not start with TSQ1 and a count; every rank must run "
                               "the same tessera-serve binary");
  }
  RouterMessage m;
  for (uint32_t i = 0; i < n; ++i) {
    uint64_t id = 0;
    if (!r.get(&id)) {
      return core::Status::error("router message of " + std::to_string(size) +
                                 " bytes ends inside its stop list; every rank must run the same "
                                 "tessera-serve binary");
    }
    m.stop.push_back(id);
  }
  auto changes = decode_changes(data + (size - r.remaining()), r.remaining());
  if (!changes) return changes.status();
  m.submit = std::move(changes->admit);
  m.cancel = std::move(changes->cancel);
  m.drain = changes->shutdown;
  return m;
}

std::vector<uint8_t> encode_report(const ReplicaReport& report) {
  std::vector<uint8_t> out;
  out.reserve(sizeof(Metrics) + 64);  // also keeps GCC 12's -Wstringop-overflow quiet
  put<uint32_t>(out, kMagic);
  put<uint8_t>(out, report.bye ? 1 : 0);
  put(out, report.metrics);
  put<uint32_t>(out, static_cast<uint32_t>(report.events.size()));
  for (const RequestEvent& e : report.events) {
    put<uint64_t>(out, e.request_id);
    put<int32_t>(out, e.token);
    put<uint8_t>(out, static_cast<uint8_t>(e.finish));
    put<int64_t>(out, e.usage.prompt_tokens);
    put<int64_t>(out, e.usage.completion_tokens);
    put<uint32_t>(out, static_cast<uint32_t>(e.error.size()));
    out.insert(out.end(), e.error.begin(), e.error.end());
    put<uint8_t>(out, e.has_logprobs ? 1 : 0);
    if (e.has_logprobs) put(out, e.logprobs);
  }
  return out;
}

core::Result<ReplicaReport> decode_report(const uint8_t* data, size_t size) {
  const auto damaged = [size](const std::string& what) {
    return core::Status::error("replica report of " + std::to_string(size) + " bytes " + what +
                               "; every rank must run the same tessera-serve binary");
  };
  Reader r(data, size);
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
    uint32_t error_bytes = 0;
    if (!r.get(&e.request_id) || !r.get(&e.token) || !r.get(&finish) ||
        !r.get(&e.usage.prompt_tokens) || !r.get(&e.usage.completion_tokens) ||
        !r.get(&error_bytes) || !r.get_string(&e.error, error_bytes) || !r.get(&has_logprobs) ||
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
