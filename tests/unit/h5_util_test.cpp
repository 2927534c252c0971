// bfloat16 helpers: round-to-nearest-even, special values, and HDF5's conversion of the bf16 file
// type to float32 agreeing bit for bit with from_bf16.
#include "checkpoint/h5_util.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "scratch_dir.h"

namespace tessera::checkpoint {
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

TEST(Bf16, Hdf5ReadsTheFileTypeAsFloat32Exactly) {
  std::vector<uint16_t> half;
  for (uint32_t h = 0; h < 0x10000u; h += 7) {
    const float f = from_bf16(static_cast<uint16_t>(h));
    if (!std::isnan(f)) half.push_back(static_cast<uint16_t>(h));
  }
  const std::string path = testing::temp_path("bf16.h5");
  {
    H5Id file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    ASSERT_TRUE(file.valid());
    const hsize_t n = half.size();
    H5Id space(H5Screate_simple(1, &n, nullptr), H5Sclose);
    H5Id type = bf16_type();
    H5Id dset(
        H5Dcreate2(file.get(), "x", type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
        H5Dclose);
    ASSERT_TRUE(dset.valid());
    ASSERT_GE(H5Dwrite(dset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, half.data()), 0);
    EXPECT_TRUE(is_bf16(type.get()));
    EXPECT_FALSE(is_float32(type.get()));
    EXPECT_EQ(H5Tget_size(type.get()), 2u);
  }
  H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  H5Id dset(H5Dopen2(file.get(), "x", H5P_DEFAULT), H5Dclose);
  H5Id stored(H5Dget_type(dset.get()), H5Tclose);
  EXPECT_TRUE(is_bf16(stored.get()));
  std::vector<float> wide(half.size());
  ASSERT_GE(H5Dread(dset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, wide.data()), 0);
  int64_t mismatches = 0;
  for (size_t i = 0; i < half.size(); ++i) {
    mismatches += std::bit_cast<uint32_t>(wide[i]) != std::bit_cast<uint32_t>(from_bf16(half[i]));
  }
  EXPECT_EQ(mismatches, 0) << "of " << half.size() << " bf16 values";
}

}  // namespace
}  // namespace tessera::checkpoint
