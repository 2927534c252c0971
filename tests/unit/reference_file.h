// Header-only reader for the PyTorch fidelity file (tests/data/gpt2_reference.bin) that
// scripts/make_reference.py writes; golden tests compare our model against its tensors.
// Format (little-endian): int32 magic 0x46525354, int32 version 1, int32 tensor_count, then per
// tensor: int32 name_len, name bytes, int32 dtype (0 f32, 1 i32), int32 ndim, int64 dims[ndim],
// data.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace tessera::testing {

inline constexpr int32_t kRefMagic = 0x46525354;
inline constexpr int32_t kRefVersion = 1;
inline constexpr int kRefFloat32 = 0;
inline constexpr int kRefInt32 = 1;

// One named tensor; exactly one of f (dtype kRefFloat32) or i (dtype kRefInt32) holds the data,
// row-major over dims.
struct RefTensor {
  std::string name;
  int dtype = kRefFloat32;
  std::vector<int64_t> dims;
  std::vector<float> f;
  std::vector<int32_t> i;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    return n;
  }
};

class ReferenceFile {
 public:
  // Reads the whole file. Throws std::runtime_error naming the file and what was wrong (missing,
  // bad magic or version, truncated, bad dtype or shape, duplicate name, trailing bytes).
  static ReferenceFile load(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, "cannot open it; run scripts/make_reference.py to create it");
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Cursor cur{path, bytes, 0};

    const int32_t magic = cur.read<int32_t>("magic");
    if (magic != kRefMagic) {
      fail(path, "bad magic " + hex(magic) + " (want " + hex(kRefMagic) +
                     "); not a reference file or corrupted, regenerate with "
                     "scripts/make_reference.py");
    }
    const int32_t version = cur.read<int32_t>("version");
    if (version != kRefVersion) {
      fail(path, "version " + std::to_string(version) + " unsupported (want " +
                     std::to_string(kRefVersion) + ")");
    }
    const int32_t count = cur.read<int32_t>("tensor_count");
    if (count < 0) fail(path, "negative tensor_count " + std::to_string(count));

    ReferenceFile file;
    file.path_ = path;
    for (int32_t t = 0; t < count; ++t) {
      const std::string where = "tensor #" + std::to_string(t);
      RefTensor rt;
      const int32_t name_len = cur.read<int32_t>(where + " name_len");
      if (name_len <= 0 || name_len > 4096) {
        fail(path, where + ": implausible name_len " + std::to_string(name_len));
      }
      rt.name = cur.read_string(static_cast<size_t>(name_len), where + " name");
      const std::string what = "tensor '" + rt.name + "'";
      rt.dtype = cur.read<int32_t>(what + " dtype");
      if (rt.dtype != kRefFloat32 && rt.dtype != kRefInt32) {
        fail(path, what + ": unknown dtype " + std::to_string(rt.dtype) + " (0 f32, 1 i32)");
      }
      const int32_t ndim = cur.read<int32_t>(what + " ndim");
      if (ndim < 0 || ndim > 8) fail(path, what + ": implausible ndim " + std::to_string(ndim));
      int64_t numel = 1;
      for (int32_t d = 0; d < ndim; ++d) {
        const int64_t dim = cur.read<int64_t>(what + " dims");
        if (dim < 0 || (dim > 0 && numel > (int64_t{1} << 40) / dim)) {
          fail(path, what + ": bad dim " + std::to_string(dim));
        }
        rt.dims.push_back(dim);
        numel *= dim;
      }
      const size_t n = static_cast<size_t>(numel);
      if (rt.dtype == kRefFloat32) {
        rt.f.resize(n);
        cur.read_array(rt.f.data(), n, what + " data");
      } else {
        rt.i.resize(n);
        cur.read_array(rt.i.data(), n, what + " data");
      }
      if (file.index_.count(rt.name) != 0) fail(path, what + " appears twice");
      file.index_.emplace(rt.name, file.tensors_.size());
      file.tensors_.push_back(std::move(rt));
    }
    if (cur.pos != bytes.size()) {
      fail(path, std::to_string(bytes.size() - cur.pos) + " trailing bytes after " +
                     std::to_string(count) + " tensors");
    }
    return file;
  }

  // Throws std::runtime_error naming the file and the missing tensor.
  const RefTensor& get(const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end()) fail(path_, "no tensor named '" + name + "'");
    return tensors_[it->second];
  }

  bool has(const std::string& name) const { return index_.count(name) != 0; }

  // Tensor names in file order.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const RefTensor& t : tensors_) out.push_back(t.name);
    return out;
  }

  const std::string& path() const { return path_; }

 private:
  static_assert(std::endian::native == std::endian::little,
                "ReferenceFile reads little-endian data by memcpy");

  struct Cursor {
    const std::string& path;
    const std::vector<char>& bytes;
    size_t pos;

    void need(size_t n, const std::string& what) const {
      if (n > bytes.size() - pos) {
        fail(path, "truncated reading " + what + " at byte " + std::to_string(pos) + " (need " +
                       std::to_string(n) + ", file has " + std::to_string(bytes.size()) + ")");
      }
    }
    template <typename T>
    T read(const std::string& what) {
      T v;
      read_array(&v, 1, what);
      return v;
    }
    template <typename T>
    void read_array(T* out, size_t n, const std::string& what) {
      need(n * sizeof(T), what);
      if (n != 0) std::memcpy(out, bytes.data() + pos, n * sizeof(T));
      pos += n * sizeof(T);
    }
    std::string read_string(size_t n, const std::string& what) {
      need(n, what);
      std::string s(bytes.data() + pos, n);
      pos += n;
      return s;
    }
  };

  [[noreturn]] static void fail(const std::string& path, const std::string& why) {
    throw std::runtime_error("reference file " + path + ": " + why);
  }

  static std::string hex(int32_t v) {
    static const char* digits = "0123456789abcdef";
    std::string s = "0x";
    for (int shift = 28; shift >= 0; shift -= 4) {
      s += digits[(static_cast<uint32_t>(v) >> shift) & 0xf];
    }
    return s;
  }

  std::string path_;
  std::vector<RefTensor> tensors_;
  std::map<std::string, size_t> index_;
};

}  // namespace tessera::testing
