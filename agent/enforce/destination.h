// Destinations of a cut: an address or CIDR, optionally with a port.
//   10.0.0.5   10.0.0.0/8   10.0.0.5:443   10.0.0.0/8:443   ::1   fd00::/8   [fd00::/8]:443   [::1]:80
#pragma once

#include "apiwarden/common/result.h"

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace apiwarden::enforce {

struct Destination {
  std::array<uint8_t, 16> addr{};  // network byte order; IPv4 v4-mapped, host bits cleared
  int prefix = 128;                // bits of addr that count, in IPv6 terms (IPv4 /8 is 104)
  uint16_t port = 0;               // 0: every port
  std::string text;                // normalised: "10.0.0.0/8:443"
};

Result<Destination> parseDestination(std::string_view text);

// Whether a's address range contains b's (or equals it).
bool covers(const Destination& a, const Destination& b);

}  // namespace apiwarden::enforce
