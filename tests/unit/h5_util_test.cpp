// HDF5's conversion of the bf16 file type to float32, agreeing bit for bit with core::from_bf16.
#include "checkpoint/h5_util.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/bf16.h"
#include "scratch_dir.h"

namespace tessera::checkpoint {
namespace {

TEST(Bf16, Hdf5ReadsTheFileTypeAsFloat32Exactly) {
  std::vector<uint16_t> half;
  for (uint32_t h = 0; h < 0x10000u; h += 7) {
    const float f = core::from_bf16(static_cast<uint16_t>(h));
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
    mismatches +=
        std::bit_cast<uint32_t>(wide[i]) != std::bit_cast<uint32_t>(core::from_bf16(half[i]));
  }
  EXPECT_EQ(mismatches, 0) << "of " << half.size() << " bf16 values";
}

}  // namespace
}  // namespace tessera::checkpoint
