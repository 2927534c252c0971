// Philox-4x32-10; constants from Random123 (Salmon et al., SC'11).
#include "core/philox.h"

#include <cmath>

namespace tessera::core {
namespace {
constexpr uint32_t kM0 = 0xD2511F53u;
constexpr uint32_t kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kW1 = 0xBB67AE85u;  // sqrt(3) - 1

inline void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}
}  // namespace

PhiloxCounter philox4x32_10(PhiloxCounter ctr, PhiloxKey key) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kM0, ctr[0], hi0, lo0);
    mulhilo(kM1, ctr[2], hi1, lo1);
    ctr = {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0};
    key[0] += kW0;
    key[1] += kW1;
  }
  return ctr;
}

PhiloxCounter philox_draw(uint64_t seed, uint64_t stream, uint64_t index) {
  PhiloxKey key = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  PhiloxCounter ctr = {static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
                       static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)};
  return philox4x32_10(ctr, key);
}

static inline float to_open01(uint32_t x) {
  // (x >> 8) in [0, 2^24); +0.5 keeps it strictly inside (0, 1).
  return (static_cast<float>(x >> 8) + 0.5f) * (1.0f / 16777216.0f);
}

float uniform01(uint64_t seed, uint64_t stream, uint64_t index) {
  return to_open01(philox_draw(seed, stream, index)[0]);
}

float standard_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  PhiloxCounter r = philox_draw(seed, stream, index);
  double u1 = (static_cast<double>(r[0]) + 0.5) / 4294967296.0;
  double u2 = (static_cast<double>(r[1]) + 0.5) / 4294967296.0;
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

}  // namespace tessera::core
