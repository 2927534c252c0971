// Helpers for the CUDA tests: a device array that uploads and downloads host vectors, output
// poisoning (every byte 0xFF: a float NaN) so unwritten elements show, seeded random inputs and
// the relative error ||out - ref|| / ||ref|| the tests compare with.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "backends/cuda/cuda_check.h"

namespace tessera::testing {

template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    TESSERA_CUDA_CHECK(cudaMalloc(&p_, n * sizeof(T) + (n == 0)), "allocating a test array");
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) { upload(host); }
  ~DeviceArray() { cudaFree(p_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() const { return p_; }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& host) {
    TESSERA_CUDA_CHECK(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice),
                       "uploading a test array");
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    TESSERA_CUDA_CHECK(cudaDeviceSynchronize(), "waiting for the kernels under test");
    TESSERA_CUDA_CHECK(cudaMemcpy(host.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost),
                       "downloading a test array");
    return host;
  }
  // Every byte 0xFF: NaN as float, so an element no kernel wrote fails the comparison.
  void poison() { TESSERA_CUDA_CHECK(cudaMemset(p_, 0xFF, n_ * sizeof(T)), "poisoning"); }

 private:
  T* p_ = nullptr;
  size_t n_;
};

// n normal(0, scale) floats from a seeded generator (fresh inputs per test, never zeros).
inline std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

// Float vectors to double and back (the double CPU references the kernels are compared with).
inline std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }
inline std::vector<float> to_float(const std::vector<double>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(v[i]);
  return out;
}

// The columns [part * C, part * C + C) of every row of a (rows, 3C) tensor: part 0 is q, 1 is k,
// 2 is v (attention's qkv and dqkv), so an error in one gradient cannot hide in the others.
inline std::vector<float> qkv_part(const std::vector<float>& qkv, int64_t rows, int64_t C,
                                   int part) {
  std::vector<float> out(static_cast<size_t>(rows * C));
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t c = 0; c < C; ++c) out[i * C + c] = qkv[i * 3 * C + part * C + c];
  }
  return out;
}

// ||out - ref||_2 / ||ref||_2 in double; +inf when out holds a NaN or the sizes differ.
inline double rel_error(const std::vector<float>& out, const std::vector<float>& ref) {
  if (out.size() != ref.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (std::isnan(out[i])) return INFINITY;
    const double d = static_cast<double>(out[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}

}  // namespace tessera::testing
