// Durations as apiwardenctl takes them: "90s", "15m", "2h", "1d", or plain seconds.
#pragma once

#include "apiwarden/common/result.h"

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

namespace apiwarden::control {

inline constexpr int64_t kMaxDurationS = int64_t{3650} * 86400;  // ten years

// Whole seconds, 1 up to kMaxDurationS; an EINVAL error with a message for anything else.
inline Result<int64_t> parseDuration(std::string_view text) {
  auto invalid = [&](const std::string& why) {
    return fail(EINVAL, "invalid duration \"" + std::string(text) + "\": " + why);
  };
  std::string_view number = text;
  int64_t unit = 1;
  constexpr std::string_view kUnits = "smhd";
  constexpr int64_t kUnitSeconds[] = {1, 60, 3600, 86400};
  if (size_t i = number.empty() ? kUnits.npos : kUnits.find(number.back()); i != kUnits.npos) {
    unit = kUnitSeconds[i];
    number.remove_suffix(1);
  }
  int64_t count = 0;
  auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), count);
  if (number.empty() || ec == std::errc::invalid_argument || end != number.data() + number.size()) {
    return invalid("expected a whole number with an optional unit s, m, h or d (90s, 15m, 2h, 1d)");
  }
  if (ec == std::errc::result_out_of_range) return invalid("out of range");
  if (count <= 0) return invalid("must be at least 1s");
  if (count > kMaxDurationS / unit) return invalid("longer than 3650d");
  return count * unit;
}

}  // namespace apiwarden::control
