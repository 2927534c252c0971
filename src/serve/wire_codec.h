// The byte codec of serving's wire messages (protocol.h: the tp broadcast; route_protocol.h: the
// router's link): fixed-size values and counted arrays in host byte order, since every rank runs
// the same binary. The reader never reads past its end; each get says whether the value was
// there, so a decoder names the damaged part.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

namespace tessera::serve {

class WireWriter {
 public:
  explicit WireWriter(size_t reserve = 64) { out_.reserve(reserve); }
  template <typename T>
  void put(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>, "only plain bytes travel");
    const auto* p = reinterpret_cast<const uint8_t*>(&value);
    out_.insert(out_.end(), p, p + sizeof(T));
  }
  // u32 count, then the elements.
  template <typename T>
  void put_array(const std::vector<T>& values) {
    static_assert(std::is_trivially_copyable_v<T>, "only plain bytes travel");
    put<uint32_t>(static_cast<uint32_t>(values.size()));
    const auto* p = reinterpret_cast<const uint8_t*>(values.data());
    out_.insert(out_.end(), p, p + values.size() * sizeof(T));
  }
  // u32 count, then the bytes.
  void put_string(const std::string& s) {
    put<uint32_t>(static_cast<uint32_t>(s.size()));
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void put_bytes(const std::vector<uint8_t>& bytes) {
    out_.insert(out_.end(), bytes.begin(), bytes.end());
  }
  std::vector<uint8_t> take() { return std::move(out_); }

 private:
  std::vector<uint8_t> out_;
};

class WireReader {
 public:
  WireReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  template <typename T>
  bool get(T* value) {
    static_assert(std::is_trivially_copyable_v<T>, "only plain bytes travel");
    if (size_ - pos_ < sizeof(T)) return false;
    std::memcpy(value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  template <typename T>
  bool get_array(std::vector<T>* values) {
    uint32_t n = 0;
    if (!get(&n) || (size_ - pos_) / sizeof(T) < n) return false;
    values->resize(n);
    // An empty vector's data() may be null, and memcpy's pointers must never be (UBSan).
    if (n > 0) std::memcpy(values->data(), data_ + pos_, n * sizeof(T));
    pos_ += n * sizeof(T);
    return true;
  }
  bool get_string(std::string* s) {
    uint32_t n = 0;
    if (!get(&n) || size_ - pos_ < n) return false;
    s->assign(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return true;
  }
  // The bytes not read yet (a nested message).
  const uint8_t* rest() const { return data_ + pos_; }
  size_t remaining() const { return size_ - pos_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace tessera::serve
