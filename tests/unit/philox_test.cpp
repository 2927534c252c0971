// Philox-4x32-10 against the Random123 known-answer vectors (kat_vectors, philox4x32 10 rounds).
#include "core/philox.h"

#include <gtest/gtest.h>

#include <cmath>

namespace tessera::core {
namespace {

TEST(Philox, KnownAnswerZero) {
  PhiloxCounter out = philox4x32_10({0, 0, 0, 0}, {0, 0});
  EXPECT_EQ(out, (PhiloxCounter{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
}

TEST(Philox, KnownAnswerOnes) {
  PhiloxCounter out = philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                                    {0xffffffffu, 0xffffffffu});
  EXPECT_EQ(out, (PhiloxCounter{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
}

TEST(Philox, KnownAnswerPi) {
  PhiloxCounter out = philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                                    {0xa4093822u, 0x299f31d0u});
  EXPECT_EQ(out, (PhiloxCounter{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(Philox, DrawsArePureFunctionsOfSeedStreamIndex) {
  EXPECT_EQ(philox_draw(7, 3, 12345), philox_draw(7, 3, 12345));
  EXPECT_NE(philox_draw(7, 3, 12345), philox_draw(7, 4, 12345));
  EXPECT_NE(philox_draw(7, 3, 12345), philox_draw(8, 3, 12345));
  EXPECT_NE(philox_draw(7, 3, 12345), philox_draw(7, 3, 12346));
}

TEST(Philox, NormalHasUnitMomentsAndUniformIsOpen) {
  const int n = 200000;
  double sum = 0, sumsq = 0;
  for (int i = 0; i < n; ++i) {
    double z = standard_normal(42, 1, i);
    sum += z;
    sumsq += z * z;
    float u = uniform01(42, 2, i);
    ASSERT_GT(u, 0.0f);
    ASSERT_LT(u, 1.0f);
  }
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(sumsq / n, 1.0, 0.02);
}

}  // namespace
}  // namespace tessera::core
