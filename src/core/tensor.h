// Tensor: shape, dtype, device and storage (owning, or a view into another tensor's storage).
// Kernels are free functions over raw pointers; Tensor only carries and checks metadata.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace tessera::core {

enum class DType { kF32, kBF16, kI32, kU16, kU32 };
enum class Device { kCpu, kCuda };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
const char* device_name(Device device);

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& shape);
std::string shape_string(const Shape& shape);  // "(4, 64, 128)"

// Host storage is 64-byte aligned and zeroed. Device storage is allocated by a backend
// (backends/backend.h) and adopted with the function that frees it.
class Storage {
 public:
  Storage(size_t bytes, Device device);
  // Adopts `bytes` at `data` on `device`; `release(data)` runs on destruction.
  Storage(void* data, size_t bytes, Device device, std::function<void(void*)> release);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
  std::function<void(void*)> release_;  // empty: host memory from aligned_alloc
};

class Tensor {
 public:
  Tensor() = default;
  // Allocates zeroed storage of shape_numel(shape) elements.
  static Tensor zeros(const Shape& shape, DType dtype = DType::kF32, Device device = Device::kCpu);
  // A tensor of `shape` and `dtype` over all of `storage` (which must hold it).
  static Tensor adopt(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype);
  // A view of `shape` starting `element_offset` elements into this tensor's storage.
  // Precondition: it fits inside this tensor.
  Tensor view(int64_t element_offset, const Shape& shape) const;
  // A view of `shape` and `dtype` starting `byte_offset` bytes into this tensor's storage (an
  // arena holding tensors of several dtypes). Precondition: it fits inside this tensor.
  Tensor view_bytes(int64_t byte_offset, const Shape& shape, DType dtype) const;

  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t bytes() const { return numel() * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool defined() const { return storage_ != nullptr; }

  void* raw() const { return static_cast<char*>(storage_->data()) + byte_offset_; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw());
  }
  float* f32() const;  // checks dtype == kF32
  void zero_();        // host tensors only (a device tensor is zeroed through its backend)

 private:
  Shape shape_;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
  std::shared_ptr<Storage> storage_;
  size_t byte_offset_ = 0;
};

}  // namespace tessera::core
