// What every entry point of starling's C++ layers shares: C++ exceptions become an error text in a
// caller's buffer and a non-zero return, never an unwind into Rust. Included by starling-torch's
// sources and by starling-dist's c10d shim (through cargo's DEP_STARLING_TORCH_INCLUDE).
#pragma once

#include <algorithm>
#include <cstring>
#include <exception>
#include <string>

namespace starling {

/// Copies `msg` into `err` (at most len - 1 bytes, NUL-terminated); nothing without a buffer.
inline void set_error(char* err, size_t len, const std::string& msg) {
  if (err == nullptr || len == 0) return;
  size_t n = std::min(len - 1, msg.size());
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

/// Runs `f`; 0 when it returns, 1 with the exception's text in `err` when it throws.
template <typename F>
int guarded(char* err, size_t len, F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    set_error(err, len, e.what());
  } catch (...) {
    set_error(err, len, "unknown C++ exception");
  }
  return 1;
}

}  // namespace starling
