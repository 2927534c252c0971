// Small HDF5 helpers shared by the checkpoint reader/writer, the conversion tool and tessera-ckpt:
// an owning identifier, a scope that silences HDF5's error printing, scalar and string
// attributes, and the bfloat16 file type of serving checkpoints.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>

namespace tessera::checkpoint {

// An HDF5 identifier closed when it leaves scope, also while an exception unwinds (in collective
// code every rank unwinds through the same closes: the failures we throw for are alike on all
// ranks). An invalid (negative) id is never closed.
class H5Id {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Id() = default;
  H5Id(hid_t id, Closer close) : id_(id), close_(close) {}
  ~H5Id() { reset(); }
  H5Id(H5Id&& other) noexcept : id_(other.id_), close_(other.close_) { other.id_ = -1; }
  H5Id& operator=(H5Id&& other) noexcept;
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset();

 private:
  hid_t id_ = -1;
  Closer close_ = nullptr;
};

// A created or opened identifier; a negative one throws tessera::Error as TESSERA_H5_CHECK does.
H5Id h5_checked(hid_t id, H5Id::Closer close, const char* call_text, const std::string& doing,
                const char* file, int line);
#define TESSERA_H5_OPEN(call, close, doing) \
  ::tessera::checkpoint::h5_checked((call), (close), #call, (doing), __FILE__, __LINE__)

// Turns HDF5's automatic error-stack printing off for calls whose failure is an expected answer
// (a truncated file, a missing attribute); restores it on scope exit.
class QuietH5Errors {
 public:
  QuietH5Errors();
  ~QuietH5Errors();
  QuietH5Errors(const QuietH5Errors&) = delete;
  QuietH5Errors& operator=(const QuietH5Errors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

// Scalar attributes of `loc` (a file, group or dataset); throw tessera::Error on failure.
void write_i32(hid_t loc, const char* name, int v);
void write_i64(hid_t loc, const char* name, int64_t v);
void write_u64(hid_t loc, const char* name, uint64_t v);
// Variable-length UTF-8 string (any length: the text lives in the global heap).
void write_string(hid_t loc, const char* name, const std::string& text);

// A scalar attribute converted to mem_type; false when absent or not convertible. Call under
// QuietH5Errors.
bool read_attr(hid_t loc, const char* name, hid_t mem_type, void* out);
// A string attribute, variable or fixed length; false when absent or not a string. Call under
// QuietH5Errors.
bool read_string(hid_t loc, const char* name, std::string* out);

// The bfloat16 file type (docs/CHECKPOINT-FORMAT.md): an HDF5 floating-point type of 2 bytes,
// little-endian, sign bit 15, 8 exponent bits at 7 (bias 127), 7 mantissa bits at 0; the top
// half of an IEEE float32. HDF5 converts it to and from float32 on read and write; h5py reads it
// with `dataset.astype("float32")`. The caller closes the returned id (an H5Id does).
H5Id bf16_type();
// Whether `type` is a dataset element type this build reads: float32 or bf16_type().
bool is_float32(hid_t type);
bool is_bf16(hid_t type);

}  // namespace tessera::checkpoint
