// Where a peer address lives: on this node, elsewhere in the cluster (configured pod, service and
// node CIDRs), or outside it.
#pragma once

#include "apiwarden/common/result.h"

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace apiwarden::flows {

class NetworkScope {
 public:
  // "10.244.0.0/16", "fd00::/8"; IPv4 prefixes also match v4-mapped IPv6 addresses.
  Result<void> addClusterCidr(const std::string& cidr);

  // addr: 16 bytes, network order, IPv4 v4-mapped. "node" for loopback, "cluster" inside a
  // cluster CIDR, else "external".
  std::string_view classify(const uint8_t addr[16]) const;

 private:
  struct Prefix {
    std::array<uint8_t, 16> addr;
    unsigned bits;
  };
  std::vector<Prefix> cluster_;
};

}  // namespace apiwarden::flows
