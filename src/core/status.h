// Status and Result<T>: how bad input (config, data, checkpoint, CLI, grid) is reported.
// A message names the thing, the value and the fix; callers must look at it ([[nodiscard]]).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace tessera::core {

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  static Status ok() { return Status(); }
  static Status error(std::string message) { return Status(std::move(message)); }

  bool is_ok() const { return !message_.has_value(); }
  explicit operator bool() const { return is_ok(); }
  const std::string& message() const {
    static const std::string kEmpty;
    return message_ ? *message_ : kEmpty;
  }
  // Prefixes context, e.g. "config configs/tiny.yaml: " + message.
  Status with_context(const std::string& context) const {
    return is_ok() ? *this : Status(context + message());
  }

 private:
  explicit Status(std::string message) : message_(std::move(message)) {}
  std::optional<std::string> message_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: must be an error status

  bool is_ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return is_ok(); }
  Status status() const { return is_ok() ? Status::ok() : std::get<Status>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T& value() & { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  const T& operator*() const& { return value(); }
  T& operator*() & { return value(); }
  const T* operator->() const { return &std::get<T>(v_); }
  T* operator->() { return &std::get<T>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace tessera::core

// Returns the Status from the enclosing function when `expr` (a Status) is an error.
#define TESSERA_RETURN_IF_ERROR(expr)     \
  do {                                    \
    ::tessera::core::Status _st = (expr); \
    if (!_st.is_ok()) return _st;         \
  } while (0)
