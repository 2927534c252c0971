// The safetensors file format (Hugging Face): an 8-byte little-endian header length N, N bytes of
// JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then
// the tensors' little-endian bytes. The reader validates the whole header before any data is read.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace tessera::checkpoint {

// Largest header the reader accepts (Hugging Face's own reader stops at 100 MB as well).
constexpr uint64_t kSafetensorsMaxHeader = 100u << 20;

// One tensor of the header. `dtype` is the format's name ("F32", "BF16", "F16", "I64", ...);
// data_offsets are relative to the first byte after the header.
struct SafetensorsTensor {
  std::string name;
  std::string dtype;
  core::Shape shape;
  uint64_t begin = 0, end = 0;
};

// Bytes per element of a dtype name of the format, or 0 for a name the format does not define.
int safetensors_dtype_size(const std::string& dtype);

// A safetensors file opened for reading. Move-only (owns the FILE).
class SafetensorsReader {
 public:
  // Opens `path` and validates its header: the length N at least 2 and at most
  // kSafetensorsMaxHeader and inside the file, valid JSON object, every entry with a known dtype,
  // a shape of non-negative integers whose element count times the dtype's size equals
  // end - begin, begin <= end, the tensors' byte ranges non-overlapping and covering the data
  // exactly (no holes, nothing after the last tensor: the format forbids both, and a truncated
  // file fails here), __metadata__ a map of strings. Each error names the file, the tensor and
  // the fix.
  static core::Result<SafetensorsReader> open(const std::string& path);

  SafetensorsReader(SafetensorsReader&&) noexcept = default;
  SafetensorsReader& operator=(SafetensorsReader&&) noexcept = default;

  const std::string& path() const { return path_; }
  // Tensors in header order (sorted by name: JSON objects are read into an ordered map).
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsTensor* find(const std::string& name) const;  // nullptr if absent

  // The tensor `name` widened to float32, row-major in its stored shape. Reads F32, BF16, F16
  // (exactly) and F64 (rounded); other dtypes, a missing tensor or a short read are errors.
  core::Status read_f32(const std::string& name, std::vector<float>* out);

 private:
  struct FileCloser {
    void operator()(std::FILE* f) const {
      if (f != nullptr) std::fclose(f);
    }
  };
  SafetensorsReader() = default;

  std::string path_;
  std::unique_ptr<std::FILE, FileCloser> file_;
  uint64_t data_start_ = 0;  // 8 + N
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes a safetensors file whose layout is fixed up front: create() writes the header (offsets
// assigned in the given order, contiguous), then write() takes each tensor, in that order, as
// float32 and stores it in its dtype (F32, or BF16 rounded to nearest even). Move-only.
class SafetensorsWriter {
 public:
  // `tensors`: name, dtype ("F32" or "BF16") and shape of each; begin/end are ignored and
  // assigned. The header is padded with spaces to a multiple of 8 bytes so every tensor starts
  // aligned. Errors: an unsupported dtype, a duplicate or reserved name, a file that cannot be
  // created.
  static core::Result<SafetensorsWriter> create(const std::string& path,
                                                std::vector<SafetensorsTensor> tensors,
                                                const std::map<std::string, std::string>& metadata);

  SafetensorsWriter(SafetensorsWriter&&) noexcept = default;
  SafetensorsWriter& operator=(SafetensorsWriter&&) noexcept = default;

  // The next tensor's data (row-major, its shape's element count). Errors: out of order, a wrong
  // element count, a failed write (names the file and the free-space fix).
  core::Status write(const std::string& name, const float* data, int64_t n);
  // Flushes and closes; an error if a tensor was not written or the flush failed.
  core::Status close();

 private:
  struct FileCloser {
    void operator()(std::FILE* f) const {
      if (f != nullptr) std::fclose(f);
    }
  };
  SafetensorsWriter() = default;
  core::Status put(const void* p, size_t bytes);

  std::string path_;
  std::unique_ptr<std::FILE, FileCloser> file_;
  std::vector<SafetensorsTensor> tensors_;
  size_t next_ = 0;
};

}  // namespace tessera::checkpoint
