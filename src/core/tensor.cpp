// Tensor metadata and host storage.
#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "core/error.h"

namespace tessera::core {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kBF16:
      return 2;
    case DType::kI32:
      return 4;
    case DType::kU16:
      return 2;
    case DType::kU32:
      return 4;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kI32:
      return "i32";
    case DType::kU16:
      return "u16";
    case DType::kU32:
      return "u32";
  }
  return "?";
}

const char* device_name(Device device) { return device == Device::kCpu ? "cpu" : "cuda"; }

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_string(const Shape& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  TESSERA_ASSERT(device == Device::kCpu,
                 "allocating host storage (device storage is the CUDA backend's)");
  size_t rounded = (bytes + 63) / 64 * 64;
  data_ = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (data_ == nullptr) {
    throw Error("allocating " + std::to_string(bytes) +
                " bytes of host memory failed: out of memory; "
                "reduce the batch size or sequence length");
  }
  std::memset(data_, 0, rounded == 0 ? 64 : rounded);
}

Storage::Storage(void* data, size_t bytes, Device device, std::function<void(void*)> release)
    : data_(data), bytes_(bytes), device_(device), release_(std::move(release)) {}

Storage::~Storage() {
  if (release_) {
    release_(data_);
  } else {
    std::free(data_);
  }
}

Tensor Tensor::adopt(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype) {
  TESSERA_ASSERT(shape_numel(shape) * dtype_size(dtype) <= storage->bytes(),
                 "adopting storage that holds the tensor");
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = storage->device();
  t.storage_ = std::move(storage);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = std::make_shared<Storage>(shape_numel(shape) * dtype_size(dtype), device);
  return t;
}

Tensor Tensor::view(int64_t element_offset, const Shape& shape) const {
  // Invariant: a view never reaches outside its storage.
  TESSERA_ASSERT(defined(), "taking a view of an empty tensor");
  size_t begin = byte_offset_ + element_offset * dtype_size(dtype_);
  TESSERA_ASSERT(begin + shape_numel(shape) * dtype_size(dtype_) <= storage_->bytes(),
                 "taking a tensor view that must fit inside its storage");
  Tensor t = *this;
  t.shape_ = shape;
  t.byte_offset_ = begin;
  return t;
}

Tensor Tensor::view_bytes(int64_t byte_offset, const Shape& shape, DType dtype) const {
  TESSERA_ASSERT(defined() && byte_offset >= 0, "taking a byte view of a tensor");
  const size_t begin = byte_offset_ + static_cast<size_t>(byte_offset);
  TESSERA_ASSERT(begin + shape_numel(shape) * dtype_size(dtype) <= byte_offset_ + bytes(),
                 "taking a tensor byte view that must fit inside the tensor");
  Tensor t = *this;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.byte_offset_ = begin;
  return t;
}

float* Tensor::f32() const {
  TESSERA_ASSERT(dtype_ == DType::kF32, "reading a tensor as f32");
  return data<float>();
}

void Tensor::zero_() {
  TESSERA_ASSERT(device_ == Device::kCpu, "zeroing a tensor on the host (device: its backend)");
  std::memset(raw(), 0, bytes());
}

}  // namespace tessera::core
