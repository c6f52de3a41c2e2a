// Errors as values: Result<T> carries either a T or an Error with errno, a message and where it
// was raised. Context is added on the way up, so a start-up failure prints its whole chain.
#pragma once

#include <cerrno>
#include <cstring>
#include <expected>
#include <source_location>
#include <string>
#include <utility>

namespace apiwarden {

class Error {
 public:
  Error(int code, std::string message, std::source_location where = std::source_location::current())
      : code_(code), message_(std::move(message)), where_(where) {}

  int code() const { return code_; }
  const std::string& message() const { return message_; }

  // Prefixes the message with what the caller was doing: "loading programs: open x: No such file".
  Error context(std::string what) && {
    message_ = std::move(what) + ": " + message_;
    return std::move(*this);
  }

  // "message: strerror (errno N) [file:line]"
  std::string describe() const {
    std::string out = message_;
    if (code_ != 0) out += std::string(": ") + std::strerror(code_) + " (errno " + std::to_string(code_) + ")";
    out += std::string(" [") + shortFile(where_.file_name()) + ":" + std::to_string(where_.line()) + "]";
    return out;
  }

 private:
  static const char* shortFile(const char* path) {
    const char* slash = std::strrchr(path, '/');
    return slash ? slash + 1 : path;
  }

  int code_;
  std::string message_;
  std::source_location where_;
};

template <typename T>
using Result = std::expected<T, Error>;

// return fail(errno, "open {}", path);  -- code 0 for errors that are not an errno.
inline std::unexpected<Error> fail(int code, std::string message,
                                   std::source_location where = std::source_location::current()) {
  return std::unexpected<Error>(Error(code, std::move(message), where));
}

}  // namespace apiwarden
