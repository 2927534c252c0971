// Host bfloat16 conversion (core/bf16.h): round to nearest even, and special values.
#include "core/bf16.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

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

}  // namespace
}  // namespace tessera::core
