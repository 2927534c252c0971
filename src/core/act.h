// Act / ConstAct: a pointer to activations with their precision, fp32 or bf16 (train.dtype: bf16
// stores a training model's activations in bf16, docs/USAGE.md). Backend ops that take them
// (backends/backend.h) read bf16 values exactly and round what they store to the nearest bf16.
// A float* converts implicitly (fp32), as does a Tensor of either dtype, so fp32 callers read
// as before.
#pragma once

#include <cstdint>

#include "core/error.h"
#include "core/tensor.h"

namespace tessera::core {

class Act {
 public:
  Act(float* p) : data_(p), dtype_(DType::kF32) {}            // NOLINT(google-explicit-constructor)
  Act(const Tensor& t) : data_(t.raw()), dtype_(t.dtype()) {  // NOLINT(google-explicit-constructor)
    TESSERA_ASSERT(dtype_ == DType::kF32 || dtype_ == DType::kBF16,
                   "using a tensor as activations (f32 or bf16)");
  }
  static Act bf16(uint16_t* p) { return Act(p, DType::kBF16); }

  DType dtype() const { return dtype_; }
  bool is_f32() const { return dtype_ == DType::kF32; }
  void* raw() const { return data_; }
  float* f32() const {
    TESSERA_ASSERT(is_f32(), "reading bf16 activations as f32");
    return static_cast<float*>(data_);
  }
  uint16_t* bf16() const {
    TESSERA_ASSERT(!is_f32(), "reading f32 activations as bf16");
    return static_cast<uint16_t*>(data_);
  }

 private:
  Act(void* p, DType dtype) : data_(p), dtype_(dtype) {}
  void* data_;
  DType dtype_;
};

class ConstAct {
 public:
  ConstAct(const float* p)
      : data_(p), dtype_(DType::kF32) {}                  // NOLINT(google-explicit-constructor)
  ConstAct(Act a) : data_(a.raw()), dtype_(a.dtype()) {}  // NOLINT(google-explicit-constructor)
  ConstAct(const Tensor& t) : ConstAct(Act(t)) {}         // NOLINT(google-explicit-constructor)
  static ConstAct bf16(const uint16_t* p) { return ConstAct(p, DType::kBF16); }

  DType dtype() const { return dtype_; }
  bool is_f32() const { return dtype_ == DType::kF32; }
  const void* raw() const { return data_; }
  const float* f32() const {
    TESSERA_ASSERT(is_f32(), "reading bf16 activations as f32");
    return static_cast<const float*>(data_);
  }
  const uint16_t* bf16() const {
    TESSERA_ASSERT(!is_f32(), "reading f32 activations as bf16");
    return static_cast<const uint16_t*>(data_);
  }

 private:
  ConstAct(const void* p, DType dtype) : data_(p), dtype_(dtype) {}
  const void* data_;
  DType dtype_;
};

}  // namespace tessera::core
