#include "agent/flows/network_scope.h"

#include <arpa/inet.h>

#include <cstring>

namespace apiwarden::flows {
namespace {

constexpr uint8_t kV4Mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool matches(const uint8_t addr[16], const std::array<uint8_t, 16>& prefix, unsigned bits) {
  unsigned whole = bits / 8, rest = bits % 8;
  if (std::memcmp(addr, prefix.data(), whole) != 0) return false;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (addr[whole] & mask) == (prefix[whole] & mask);
}

}  // namespace

Result<void> NetworkScope::addClusterCidr(const std::string& cidr) {
  size_t slash = cidr.find('/');
  std::string ip = cidr.substr(0, slash);
  Prefix prefix{};
  unsigned max_bits = 128;
  if (inet_pton(AF_INET6, ip.c_str(), prefix.addr.data()) != 1) {
    if (inet_pton(AF_INET, ip.c_str(), prefix.addr.data() + 12) != 1) return fail(EINVAL, "not a CIDR: " + cidr);
    std::memcpy(prefix.addr.data(), kV4Mapped, sizeof(kV4Mapped));
    max_bits = 32;
  }
  unsigned bits = max_bits;
  if (slash != std::string::npos) {
    std::string length = cidr.substr(slash + 1);
    if (length.empty() || length.size() > 3 || length.find_first_not_of("0123456789") != std::string::npos ||
        std::stoul(length) > max_bits) {
      return fail(EINVAL, "bad prefix length in " + cidr);
    }
    bits = static_cast<unsigned>(std::stoul(length));
  }
  prefix.bits = bits + (max_bits == 32 ? 96 : 0);
  cluster_.push_back(prefix);
  return {};
}

std::string_view NetworkScope::classify(const uint8_t addr[16]) const {
  static constexpr uint8_t kLoopback6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  bool v4 = std::memcmp(addr, kV4Mapped, sizeof(kV4Mapped)) == 0;
  if ((v4 && addr[12] == 127) || std::memcmp(addr, kLoopback6, 16) == 0) return "node";
  for (const auto& prefix : cluster_) {
    if (matches(addr, prefix.addr, prefix.bits)) return "cluster";
  }
  return "external";
}

}  // namespace apiwarden::flows
