// Shared HDF5 helpers; see h5_util.h.
#include "checkpoint/h5_util.h"

#include <string>

#include "core/error.h"

namespace tessera::checkpoint {

H5Id& H5Id::operator=(H5Id&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = other.id_;
    close_ = other.close_;
    other.id_ = -1;
  }
  return *this;
}

void H5Id::reset() {
  if (id_ >= 0 && close_ != nullptr) close_(id_);
  id_ = -1;
}

H5Id h5_checked(hid_t id, H5Id::Closer close, const char* call_text, const std::string& doing,
                const char* file, int line) {
  if (id < 0) {
    core::throw_check_failure("HDF5", call_text, doing.c_str(), "HDF5 call returned an error", file,
                              line);
  }
  return H5Id(id, close);
}

QuietH5Errors::QuietH5Errors() {
  H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}
QuietH5Errors::~QuietH5Errors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }

namespace {
void write_attr(hid_t loc, const char* name, hid_t file_type, hid_t mem_type, const void* value) {
  const std::string doing = std::string("writing checkpoint attribute ") + name;
  H5Id space = TESSERA_H5_OPEN(H5Screate(H5S_SCALAR), H5Sclose, doing);
  H5Id attr = TESSERA_H5_OPEN(
      H5Acreate2(loc, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose, doing);
  TESSERA_H5_CHECK(H5Awrite(attr.get(), mem_type, value), doing.c_str());
}

}  // namespace

void write_i64(hid_t loc, const char* name, int64_t v) {
  write_attr(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}
void write_i32(hid_t loc, const char* name, int v) {
  write_attr(loc, name, H5T_STD_I32LE, H5T_NATIVE_INT, &v);
}
void write_u64(hid_t loc, const char* name, uint64_t v) {
  write_attr(loc, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &v);
}
// Variable-length UTF-8 string (any length: the text lives in the global heap).
void write_string(hid_t loc, const char* name, const std::string& text) {
  const std::string doing = std::string("writing checkpoint attribute ") + name;
  H5Id type = TESSERA_H5_OPEN(H5Tcopy(H5T_C_S1), H5Tclose, doing);
  TESSERA_H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE), doing.c_str());
  TESSERA_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8), doing.c_str());
  const char* p = text.c_str();
  write_attr(loc, name, type.get(), type.get(), &p);
}

// Reads a scalar attribute converted to mem_type; false when absent or not convertible.
// Call under QuietH5Errors.
bool read_attr(hid_t loc, const char* name, hid_t mem_type, void* out) {
  if (H5Aexists(loc, name) <= 0) return false;
  H5Id attr(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
  if (!attr.valid()) return false;
  H5Id space(H5Aget_space(attr.get()), H5Sclose);
  if (!space.valid() || H5Sget_simple_extent_npoints(space.get()) != 1) return false;
  return H5Aread(attr.get(), mem_type, out) >= 0;
}

// A string attribute, variable or fixed length. Call under QuietH5Errors.
bool read_string(hid_t loc, const char* name, std::string* out) {
  if (H5Aexists(loc, name) <= 0) return false;
  H5Id attr(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
  if (!attr.valid()) return false;
  H5Id file_type(H5Aget_type(attr.get()), H5Tclose);
  if (!file_type.valid() || H5Tget_class(file_type.get()) != H5T_STRING) return false;
  H5Id mem_type(H5Tcopy(H5T_C_S1), H5Tclose);
  // HDF5 does not convert between character sets: read in the file's.
  if (H5Tset_cset(mem_type.get(), H5Tget_cset(file_type.get())) < 0) return false;
  if (H5Tis_variable_str(file_type.get()) > 0) {
    if (H5Tset_size(mem_type.get(), H5T_VARIABLE) < 0) return false;
    char* p = nullptr;
    if (H5Aread(attr.get(), mem_type.get(), &p) < 0 || p == nullptr) return false;
    *out = p;
    H5free_memory(p);
    return true;
  }
  const size_t size = H5Tget_size(file_type.get());
  std::string buf(size + 1, '\0');
  if (H5Tset_size(mem_type.get(), size + 1) < 0) return false;
  if (H5Aread(attr.get(), mem_type.get(), buf.data()) < 0) return false;
  buf.resize(std::char_traits<char>::length(buf.c_str()));
  *out = buf;
  return true;
}

H5Id bf16_type() {
  const char* doing = "making the bfloat16 file type";
  H5Id type = TESSERA_H5_OPEN(H5Tcopy(H5T_IEEE_F32LE), H5Tclose, doing);
  // Shrink float32 to its top 16 bits: fields first (they must fit the new precision), then
  // precision and size. Exponent bias stays 127.
  TESSERA_H5_CHECK(H5Tset_fields(type.get(), 15, 7, 8, 0, 7), doing);
  TESSERA_H5_CHECK(H5Tset_offset(type.get(), 0), doing);
  TESSERA_H5_CHECK(H5Tset_precision(type.get(), 16), doing);
  TESSERA_H5_CHECK(H5Tset_size(type.get(), 2), doing);
  TESSERA_H5_CHECK(H5Tset_ebias(type.get(), 127), doing);
  return type;
}

bool is_float32(hid_t type) { return H5Tequal(type, H5T_IEEE_F32LE) > 0; }

bool is_bf16(hid_t type) {
  H5Id bf16 = bf16_type();
  return H5Tequal(type, bf16.get()) > 0;
}

}  // namespace tessera::checkpoint
