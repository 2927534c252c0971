// Shared test helpers for backward kernels: deterministic random fills (Philox) and a
// central-difference gradient checker reporting the worst element's relative error.
// Header-only; every check runs in double. Inside namespace tessera, `testing::` names this
// namespace, not gtest's: alias it (namespace tt = tessera::testing) and write ::testing for gtest.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/philox.h"

namespace tessera::testing {

// Any stream id works for tests; a fixed one keeps values reproducible across runs.
inline constexpr uint64_t kTestStream = 0x7e57;

// v[i] = offset + scale * N(0, 1), drawn from (seed, kTestStream, i): the same seed always
// gives the same values.
inline void fill_normal(std::vector<double>& v, uint64_t seed, double scale = 1.0,
                        double offset = 0.0) {
  for (size_t i = 0; i < v.size(); ++i) {
    v[i] = offset + scale * static_cast<double>(core::standard_normal(seed, kTestStream, i));
  }
}

// A fresh vector of n values as fill_normal makes them.
inline std::vector<double> random_vector(int64_t n, uint64_t seed, double scale = 1.0,
                                         double offset = 0.0) {
  std::vector<double> v(static_cast<size_t>(n));
  fill_normal(v, seed, scale, offset);
  return v;
}

// Element-wise conversion (double reference -> float instantiation and back).
template <typename To, typename From>
std::vector<To> cast_vector(const std::vector<From>& v) {
  return std::vector<To>(v.begin(), v.end());
}

// sum_i x[i] * r[i]: the scalar loss L = sum(out .* R) whose gradient wrt out is R.
template <typename T>
double dot(const std::vector<T>& x, const std::vector<double>& r) {
  EXPECT_EQ(x.size(), r.size()) << "dot: size mismatch";
  double s = 0.0;
  for (size_t i = 0; i < std::min(x.size(), r.size()); ++i) s += static_cast<double>(x[i]) * r[i];
  return s;
}

// Root mean square of v: a scale for the floor when comparing sums whose terms cancel (float
// against double), so an element near zero is judged against the tensor's typical size.
template <typename T>
double rms(const std::vector<T>& v) {
  double s = 0.0;
  for (const T& x : v) s += static_cast<double>(x) * static_cast<double>(x);
  return v.empty() ? 0.0 : std::sqrt(s / static_cast<double>(v.size()));
}

// The relative error used everywhere: |a - n| / max(floor, |a| + |n|). The floor keeps
// elements whose true gradient is ~0 from turning finite-difference round-off into a large ratio.
inline double relative_error(double a, double n, double floor = 1e-6) {
  return std::fabs(a - n) / std::max(floor, std::fabs(a) + std::fabs(n));
}

struct GradCheckResult {
  double max_rel_error = 0.0;  // over all elements
  int64_t worst_index = -1;    // element with that error (-1: empty parameter)
  double analytic = 0.0;       // analytic gradient at worst_index
  double numeric = 0.0;        // central difference at worst_index
};

// Perturbs param[i] by +-h (restoring it after) and compares (L(+h) - L(-h)) / 2h with
// analytic[i] for every i. `loss` must read `param` (by reference) each time it runs.
// Round-off: the quotient carries about |L| · 1e-16 / h (≈ |L| · 1e-10 at h = 1e-6) of noise,
// so pick floor with noise / floor below the tolerance when some true gradients are ~0.
inline GradCheckResult check_gradient(const std::function<double()>& loss,
                                      std::vector<double>& param,
                                      const std::vector<double>& analytic, double h = 1e-6,
                                      double floor = 1e-6) {
  EXPECT_EQ(param.size(), analytic.size()) << "check_gradient: param and analytic sizes differ";
  GradCheckResult result;
  const size_t n = std::min(param.size(), analytic.size());
  for (size_t i = 0; i < n; ++i) {
    const double saved = param[i];
    param[i] = saved + h;
    const double plus = loss();
    param[i] = saved - h;
    const double minus = loss();
    param[i] = saved;
    const double numeric = (plus - minus) / (2.0 * h);
    const double err = relative_error(analytic[i], numeric, floor);
    if (result.worst_index < 0 || err > result.max_rel_error) {
      result = {err, static_cast<int64_t>(i), analytic[i], numeric};
    }
  }
  return result;
}

// check_gradient, then a gtest failure naming `what`, the worst element and both values when
// the max relative error reaches `tol`.
inline void expect_gradient_close(const std::string& what, const std::function<double()>& loss,
                                  std::vector<double>& param, const std::vector<double>& analytic,
                                  double tol = 1e-6, double h = 1e-6, double floor = 1e-6) {
  const GradCheckResult r = check_gradient(loss, param, analytic, h, floor);
  EXPECT_LT(r.max_rel_error, tol) << what << ": gradient mismatch at element " << r.worst_index
                                  << " of " << param.size() << ": analytic " << r.analytic
                                  << ", numeric " << r.numeric << ", relative error "
                                  << r.max_rel_error;
}

// Max over i of relative_error(a[i], b[i], floor): compares a float run against a double one.
template <typename A, typename B>
double max_relative_error(const std::vector<A>& a, const std::vector<B>& b, double floor = 1e-6) {
  EXPECT_EQ(a.size(), b.size()) << "max_relative_error: size mismatch";
  double worst = 0.0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    worst = std::max(worst,
                     relative_error(static_cast<double>(a[i]), static_cast<double>(b[i]), floor));
  }
  return worst;
}

// gtest failure naming `what`, the worst element and both values when a and b differ by
// tol or more in relative_error.
template <typename A, typename B>
void expect_all_close(const std::string& what, const std::vector<A>& a, const std::vector<B>& b,
                      double tol, double floor = 1e-6) {
  ASSERT_EQ(a.size(), b.size()) << what << ": size mismatch";
  double worst = -1.0;
  size_t at = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = relative_error(static_cast<double>(a[i]), static_cast<double>(b[i]), floor);
    if (e > worst) {
      worst = e;
      at = i;
    }
  }
  if (!a.empty()) {
    EXPECT_LT(worst, tol) << what << ": element " << at << " of " << a.size() << ": "
                          << static_cast<double>(a[at]) << " vs " << static_cast<double>(b[at])
                          << ", relative error " << worst;
  }
}

}  // namespace tessera::testing
