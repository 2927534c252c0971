// safetensors reader and writer: the header is parsed with nlohmann-json and checked whole before
// any tensor is read; data are read with one seek and one read per tensor. Little-endian hosts.
#include "checkpoint/safetensors.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "core/bf16.h"

namespace tessera::checkpoint {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data are little-endian; this reader copies bytes as they are");

using json = nlohmann::json;

// IEEE binary16 bits -> float32 (exact: every half is a float).
float from_f16(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  uint32_t bits = 0;
  if (exponent == 0x1Fu) {
    bits = sign | 0x7F800000u | (mantissa << 13);  // inf or NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);  // rebias 15 -> 127
  } else if (mantissa == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal half: mantissa * 2^-24; normalise it for float32.
    int e = -1;
    do {
      ++e;
      mantissa <<= 1;
    } while ((mantissa & 0x400u) == 0);
    bits = sign | ((112u - static_cast<uint32_t>(e)) << 23) | ((mantissa & 0x3FFu) << 13);
  }
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

std::string range_text(const SafetensorsTensor& t) {
  char text[48];
  std::snprintf(text, sizeof text, "[%llu, %llu]", static_cast<unsigned long long>(t.begin),
                static_cast<unsigned long long>(t.end));
  return text;
}

// Element count of `shape`, false on a negative dimension or overflow past 2^62.
bool element_count(const core::Shape& shape, uint64_t* n) {
  uint64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (d != 0 && count > (uint64_t{1} << 62) / static_cast<uint64_t>(d)) return false;
    count *= static_cast<uint64_t>(d);
  }
  *n = count;
  return true;
}

}  // namespace

int safetensors_dtype_size(const std::string& dtype) {
  static const std::map<std::string, int> kSizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8}};
  auto it = kSizes.find(dtype);
  return it == kSizes.end() ? 0 : it->second;
}

// ---- reader ----

core::Result<SafetensorsReader> SafetensorsReader::open(const std::string& path) {
  const std::string where = "safetensors file '" + path + "': ";
  const std::string fix = "; download or export it again";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return core::Status::error(where + "not found or not a regular file; check the path");
  }
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  SafetensorsReader r;
  r.path_ = path;
  r.file_.reset(std::fopen(path.c_str(), "rb"));
  if (!r.file_) {
    return core::Status::error(where + "cannot be opened (" + std::strerror(errno) +
                               "); check its permissions");
  }
  if (file_size < 8) {
    return core::Status::error(where + "is " + std::to_string(file_size) +
                               " bytes, shorter than the 8-byte header length: truncated or not "
                               "a safetensors file" +
                               fix);
  }
  unsigned char len_bytes[8];
  if (std::fread(len_bytes, 1, 8, r.file_.get()) != 8) {
    return core::Status::error(where + "cannot read its header length" + fix);
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];  // little-endian u64
  if (n > kSafetensorsMaxHeader) {
    return core::Status::error(where + "header length " + std::to_string(n) +
                               " exceeds the 100 MiB limit: not a safetensors file, or its first "
                               "8 bytes are corrupt" +
                               fix);
  }
  if (n > file_size - 8) {
    return core::Status::error(where + "header length " + std::to_string(n) +
                               " runs past the end of the file (" + std::to_string(file_size) +
                               " bytes): truncated, or not a safetensors file" + fix);
  }
  if (n < 2) {
    return core::Status::error(where + "header length " + std::to_string(n) +
                               " cannot hold a JSON object: not a safetensors file");
  }
  std::string text(n, '\0');
  if (std::fread(text.data(), 1, n, r.file_.get()) != n) {
    return core::Status::error(where + "cannot read its " + std::to_string(n) + "-byte header" +
                               fix);
  }
  json header = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return core::Status::error(where + "the " + std::to_string(n) +
                               "-byte header is not a JSON object: the file is corrupt" + fix);
  }
  r.data_start_ = 8 + n;
  const uint64_t data_size = file_size - r.data_start_;
  for (const auto& [name, entry] : header.items()) {
    const std::string tw = where + "tensor '" + name + "' ";
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        return core::Status::error(where + "__metadata__ is not a JSON object of strings" + fix);
      }
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return core::Status::error(where + "__metadata__ entry '" + key +
                                     "' is not a string (the format allows strings only)" + fix);
        }
        r.metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
      return core::Status::error(tw +
                                 "lacks dtype, shape or data_offsets in the header: the "
                                 "file is corrupt" +
                                 fix);
    }
    SafetensorsTensor t;
    t.name = name;
    if (!entry["dtype"].is_string()) {
      return core::Status::error(tw + "has a dtype that is not a string" + fix);
    }
    t.dtype = entry["dtype"].get<std::string>();
    const int element = safetensors_dtype_size(t.dtype);
    if (element == 0) {
      return core::Status::error(tw + "has dtype '" + t.dtype +
                                 "', which the safetensors format does not define (known: F32, "
                                 "BF16, F16, F64, I64, I32, I16, I8, U8, U16, U32, U64, BOOL, "
                                 "F8_E5M2, F8_E4M3); the file is corrupt or from a newer format" +
                                 fix);
    }
    const json& shape = entry["shape"];
    if (!shape.is_array()) return core::Status::error(tw + "has a shape that is not a list" + fix);
    for (const json& d : shape) {
      if (!d.is_number_unsigned()) {
        return core::Status::error(tw + "has shape " + shape.dump() +
                                   ": dimensions must be non-negative integers" + fix);
      }
      t.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
    }
    const json& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      return core::Status::error(tw + "has data_offsets " + offsets.dump() +
                                 ": expected [begin, end], two non-negative integers" + fix);
    }
    t.begin = offsets[0].get<uint64_t>();
    t.end = offsets[1].get<uint64_t>();
    if (t.begin > t.end) {
      return core::Status::error(tw + "has data_offsets " + range_text(t) +
                                 " with begin after end: the header is corrupt" + fix);
    }
    if (t.end > data_size) {
      return core::Status::error(tw + "has data_offsets " + range_text(t) + " ending past the " +
                                 std::to_string(data_size) +
                                 " data bytes the file holds: the file is truncated" + fix);
    }
    uint64_t count = 0;
    if (!element_count(t.shape, &count) || count * element != t.end - t.begin) {
      return core::Status::error(tw + "of shape " + core::shape_string(t.shape) + " and dtype " +
                                 t.dtype + " needs " + std::to_string(count * element) +
                                 " bytes, but its data_offsets " + range_text(t) + " span " +
                                 std::to_string(t.end - t.begin) + ": the header is corrupt" + fix);
    }
    r.tensors_.push_back(std::move(t));
  }
  // The tensors' ranges, in file order, must tile the data exactly.
  std::vector<const SafetensorsTensor*> by_offset;
  for (const SafetensorsTensor& t : r.tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;
  const SafetensorsTensor* previous = nullptr;
  for (const SafetensorsTensor* t : by_offset) {
    if (previous != nullptr && t->begin < previous->end) {
      return core::Status::error(where + "tensors '" + previous->name + "' " +
                                 range_text(*previous) + " and '" + t->name + "' " +
                                 range_text(*t) + " overlap: the header is corrupt" + fix);
    }
    if (t->begin > covered) {
      return core::Status::error(where + "data bytes [" + std::to_string(covered) + ", " +
                                 std::to_string(t->begin) +
                                 ") belong to no tensor (the format forbids holes): the header "
                                 "is corrupt" +
                                 fix);
    }
    covered = t->end;
    previous = t;
  }
  if (covered != data_size) {
    return core::Status::error(where + "holds " + std::to_string(data_size - covered) +
                               " bytes after its last tensor (the header describes " +
                               std::to_string(covered) + " data bytes, the file holds " +
                               std::to_string(data_size) + "): the header is corrupt" + fix);
  }
  return r;
}

const SafetensorsTensor* SafetensorsReader::find(const std::string& name) const {
  for (const SafetensorsTensor& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

core::Status SafetensorsReader::read_f32(const std::string& name, std::vector<float>* out) {
  const std::string where = "safetensors file '" + path_ + "': tensor '" + name + "' ";
  const SafetensorsTensor* t = find(name);
  if (t == nullptr) return core::Status::error(where + "is missing");
  const int element = safetensors_dtype_size(t->dtype);
  if (t->dtype != "F32" && t->dtype != "BF16" && t->dtype != "F16" && t->dtype != "F64") {
    return core::Status::error(where + "has dtype " + t->dtype +
                               "; weights must be F32, BF16, F16 or F64: export them as floats");
  }
  const uint64_t bytes = t->end - t->begin;
  const size_t n = bytes / static_cast<uint64_t>(element);
  out->resize(n);
  if (fseeko(file_.get(), static_cast<off_t>(data_start_ + t->begin), SEEK_SET) != 0) {
    return core::Status::error(where + "cannot be reached (" + std::strerror(errno) + ")");
  }
  bool ok = true;
  if (t->dtype == "F32") {
    ok = std::fread(out->data(), 4, n, file_.get()) == n;
  } else if (t->dtype == "F64") {
    std::vector<double> wide(n);
    ok = std::fread(wide.data(), 8, n, file_.get()) == n;
    for (size_t i = 0; i < n; ++i) (*out)[i] = static_cast<float>(wide[i]);
  } else {
    std::vector<uint16_t> half(n);
    ok = std::fread(half.data(), 2, n, file_.get()) == n;
    const bool bf16 = t->dtype == "BF16";
    for (size_t i = 0; i < n; ++i) {
      (*out)[i] = bf16 ? core::from_bf16(half[i]) : from_f16(half[i]);
    }
  }
  if (!ok) {
    return core::Status::error(where +
                               "cannot be read (the file shrank or the disk failed); "
                               "download or export it again");
  }
  return core::Status::ok();
}

// ---- writer ----

core::Result<SafetensorsWriter> SafetensorsWriter::create(
    const std::string& path, std::vector<SafetensorsTensor> tensors,
    const std::map<std::string, std::string>& metadata) {
  const std::string where = "writing safetensors file '" + path + "': ";
  json header = json::object();
  std::set<std::string> names;
  uint64_t offset = 0;
  for (SafetensorsTensor& t : tensors) {
    if (t.dtype != "F32" && t.dtype != "BF16") {
      return core::Status::error(where + "tensor '" + t.name + "' has dtype " + t.dtype +
                                 "; this writer stores F32 or BF16");
    }
    if (t.name == "__metadata__" || !names.insert(t.name).second) {
      return core::Status::error(where + "tensor name '" + t.name + "' is reserved or repeated");
    }
    uint64_t count = 0;
    if (!element_count(t.shape, &count)) {
      return core::Status::error(where + "tensor '" + t.name + "' has impossible shape " +
                                 core::shape_string(t.shape));
    }
    t.begin = offset;
    t.end = offset + count * static_cast<uint64_t>(safetensors_dtype_size(t.dtype));
    offset = t.end;
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {t.begin, t.end}}};
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // tensors start 8-byte aligned

  SafetensorsWriter w;
  w.path_ = path;
  w.tensors_ = std::move(tensors);
  w.file_.reset(std::fopen(path.c_str(), "wb"));
  if (!w.file_) {
    return core::Status::error(where + "cannot create it (" + std::strerror(errno) +
                               "); check the directory exists and is writable");
  }
  unsigned char len_bytes[8];
  uint64_t n = text.size();
  for (unsigned char& b : len_bytes) {
    b = static_cast<unsigned char>(n & 0xFF);
    n >>= 8;
  }
  TESSERA_RETURN_IF_ERROR(w.put(len_bytes, 8));
  TESSERA_RETURN_IF_ERROR(w.put(text.data(), text.size()));
  return w;
}

core::Status SafetensorsWriter::put(const void* p, size_t bytes) {
  if (bytes != 0 && std::fwrite(p, 1, bytes, file_.get()) != bytes) {
    return core::Status::error("cannot write '" + path_ + "': " + std::strerror(errno) +
                               "; check free space on its disk");
  }
  return core::Status::ok();
}

core::Status SafetensorsWriter::write(const std::string& name, const float* data, int64_t n) {
  if (next_ >= tensors_.size() || tensors_[next_].name != name) {
    return core::Status::error("writing '" + path_ + "': tensor '" + name +
                               "' is out of the order given to create()");
  }
  const SafetensorsTensor& t = tensors_[next_];
  uint64_t count = 0;
  element_count(t.shape, &count);
  if (static_cast<uint64_t>(n) != count) {
    return core::Status::error("writing '" + path_ + "': tensor '" + name + "' got " +
                               std::to_string(n) + " numbers, its shape " +
                               core::shape_string(t.shape) + " holds " + std::to_string(count));
  }
  ++next_;
  if (t.dtype == "F32") return put(data, static_cast<size_t>(n) * 4);
  std::vector<uint16_t> half(static_cast<size_t>(n));
  for (size_t i = 0; i < half.size(); ++i) half[i] = core::to_bf16(data[i]);
  return put(half.data(), half.size() * 2);
}

core::Status SafetensorsWriter::close() {
  if (next_ != tensors_.size()) {
    return core::Status::error("writing '" + path_ + "': tensor '" + tensors_[next_].name +
                               "' and later ones were never written");
  }
  const bool flushed = std::fflush(file_.get()) == 0;
  const bool closed = std::fclose(file_.release()) == 0;
  if (!flushed || !closed) {
    return core::Status::error("cannot flush '" + path_ + "': " + std::strerror(errno) +
                               "; check free space on its disk");
  }
  return core::Status::ok();
}

}  // namespace tessera::checkpoint
