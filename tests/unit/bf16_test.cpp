// Host bfloat16 conversion (core/bf16.h): round to nearest even, and special values.
#include "core/bf16.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "backends/cpu/bf16_round.h"

namespace tessera::core {
namespace {

float bits_to_float(uint32_t b) { return std::bit_cast<float>(b); }

TEST(Bf16, RoundsToNearestEven) {
  // 1 + 2^-8 lies halfway between bf16 1.0 (0x3f80) and 1 + 2^-7 (0x3f81): ties go to even.
  EXPECT_EQ(to_bf16(bits_to_float(0x3f808000u)), 0x3f80);
  // Halfway above an odd mantissa rounds up to even.
  EXPECT_EQ(to_bf16(bits_to_float(0x3f818000u)), 0x3f82);
  // Just above halfway rounds up, just below rounds down.
  EXPECT_EQ(to_bf16(bits_to_float(0x3f808001u)), 0x3f81);
  EXPECT_EQ(to_bf16(bits_to_float(0x3f807fffu)), 0x3f80);
  // Negative values round by magnitude.
  EXPECT_EQ(to_bf16(bits_to_float(0xbf808001u)), 0xbf81);
}

TEST(Bf16, SpecialValues) {
  EXPECT_EQ(to_bf16(0.0f), 0x0000);
  EXPECT_EQ(to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_TRUE(std::isnan(from_bf16(to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN whose payload sits only in the dropped bits must not become infinity.
  EXPECT_TRUE(std::isnan(from_bf16(to_bf16(bits_to_float(0x7f800001u)))));
  // The largest float rounds up to infinity, as IEEE rounding requires.
  EXPECT_EQ(to_bf16(std::numeric_limits<float>::max()), 0x7f80);
  for (uint32_t h : {0x0001u, 0x3f80u, 0xc2f7u, 0x7f7fu, 0x8080u}) {
    EXPECT_EQ(to_bf16(from_bf16(static_cast<uint16_t>(h))), h) << "bf16 -> f32 -> bf16 of " << h;
  }
}

// The CPU backend's branch-free rounding (bf16 GEMM operands) gives the bits of
// from_bf16(to_bf16(x)) for every float pattern in a stride-997 sweep of all 2^32 (NaNs,
// infinities, subnormals, ties included) and for each edge case by name; the array form equals the
// scalar.
TEST(Bf16, BackendRoundingEqualsTheConversionBothWays) {
  std::vector<float> in, out;
  for (uint64_t b = 0; b <= 0xffffffffull; b += 997)
    in.push_back(bits_to_float(static_cast<uint32_t>(b)));
  for (uint32_t b : {0x3f808000u, 0x3f818000u, 0x7f7fffffu, 0xff7fffffu, 0x7f800001u, 0xff800000u,
                     0x00000001u, 0x80008000u, 0x7fc00000u, 0x7fffffffu}) {
    in.push_back(bits_to_float(b));
  }
  out.resize(in.size());
  backends::cpu::round_to_bf16(out.data(), in.data(), static_cast<int64_t>(in.size()));
  int64_t mismatches = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const uint32_t want = std::bit_cast<uint32_t>(from_bf16(to_bf16(in[i])));
    const uint32_t scalar = std::bit_cast<uint32_t>(backends::cpu::round_to_bf16(in[i]));
    if (std::bit_cast<uint32_t>(out[i]) != want || scalar != want) {
      if (++mismatches <= 5) {
        ADD_FAILURE() << std::hex << "input 0x" << std::bit_cast<uint32_t>(in[i]) << ": want 0x"
                      << want << ", array 0x" << std::bit_cast<uint32_t>(out[i]) << ", scalar 0x"
                      << scalar;
      }
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << in.size() << " patterns";
  EXPECT_GT(in.size(), 4300000u);
}

}  // namespace
}  // namespace tessera::core
