// learning_rate: warmup values, the peak, the cosine midpoint and floor, monotonic decay after
// warmup, the constant schedule, and an unknown schedule refused.
#include "optim/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "core/config.h"
#include "core/error.h"

namespace tessera::optim {
namespace {

core::OptimConfig cosine_config() {
  core::OptimConfig c;
  c.lr = 1e-3;
  c.min_lr = 1e-4;
  c.warmup_steps = 10;
  c.schedule = "cosine";
  return c;
}

TEST(LrSchedule, WarmupIsLinearAndNeverZero) {
  const auto c = cosine_config();
  EXPECT_DOUBLE_EQ(learning_rate(c, 0, 100), 1e-4);  // lr · 1 / 10
  EXPECT_DOUBLE_EQ(learning_rate(c, 4, 100), 5e-4);
  EXPECT_DOUBLE_EQ(learning_rate(c, 9, 100), 1e-3);  // the peak is reached on the last warmup step
  for (int s = 1; s < 10; ++s) {
    EXPECT_GT(learning_rate(c, s, 100), learning_rate(c, s - 1, 100)) << "step " << s;
  }
}

TEST(LrSchedule, CosineFromPeakToFloor) {
  const auto c = cosine_config();
  EXPECT_DOUBLE_EQ(learning_rate(c, 10, 100), 1e-3);      // cos(0) = 1: the peak
  EXPECT_NEAR(learning_rate(c, 55, 100), 5.5e-4, 1e-15);  // halfway: the mean
  EXPECT_NEAR(learning_rate(c, 28, 100),                  // a fifth of the way
              1e-4 + 0.5 * (1.0 + std::cos(std::numbers::pi * 0.2)) * 9e-4, 1e-15);
  EXPECT_DOUBLE_EQ(learning_rate(c, 100, 100), 1e-4);  // total_steps: the floor
  EXPECT_DOUBLE_EQ(learning_rate(c, 150, 100), 1e-4);  // past the end: stays there
  EXPECT_GT(learning_rate(c, 99, 100), 1e-4);          // the last step is not yet it
}

TEST(LrSchedule, DecaysMonotonicallyAfterWarmup) {
  const auto c = cosine_config();
  for (int s = 11; s <= 100; ++s) {
    EXPECT_LT(learning_rate(c, s, 100), learning_rate(c, s - 1, 100)) << "step " << s;
    EXPECT_GE(learning_rate(c, s, 100), c.min_lr) << "step " << s;
  }
}

TEST(LrSchedule, NoWarmupStartsAtPeak) {
  auto c = cosine_config();
  c.warmup_steps = 0;
  EXPECT_DOUBLE_EQ(learning_rate(c, 0, 50), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(c, 50, 50), 1e-4);
}

TEST(LrSchedule, ConstantIgnoresWarmupAndDecay) {
  auto c = cosine_config();
  c.schedule = "constant";
  for (int s : {0, 5, 10, 50, 100, 1000}) EXPECT_EQ(learning_rate(c, s, 100), 1e-3) << s;
}

TEST(LrSchedule, UnknownScheduleIsRefused) {
  auto c = cosine_config();
  c.schedule = "linear";
  EXPECT_THROW(learning_rate(c, 0, 100), tessera::Error);
}

}  // namespace
}  // namespace tessera::optim
