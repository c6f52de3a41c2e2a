// Peer scope: node (loopback), cluster (configured CIDRs, IPv4 also as v4-mapped), external.
#include "agent/flows/network_scope.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <array>

namespace apiwarden::flows {
namespace {

std::array<uint8_t, 16> addr(const char* text) {
  std::array<uint8_t, 16> out{};
  if (inet_pton(AF_INET6, text, out.data()) != 1) {
    out[10] = out[11] = 0xff;
    inet_pton(AF_INET, text, out.data() + 12);
  }
  return out;
}

TEST(NetworkScope, ClassifiesByCidr) {
  NetworkScope scope;
  ASSERT_TRUE(scope.addClusterCidr("10.244.0.0/16"));
  ASSERT_TRUE(scope.addClusterCidr("10.96.0.10"));  // a single address
  ASSERT_TRUE(scope.addClusterCidr("fd00:10::/32"));
  EXPECT_EQ(scope.classify(addr("127.0.0.1").data()), "node");
  EXPECT_EQ(scope.classify(addr("::1").data()), "node");
  EXPECT_EQ(scope.classify(addr("10.244.3.7").data()), "cluster");
  EXPECT_EQ(scope.classify(addr("10.245.0.1").data()), "external");
  EXPECT_EQ(scope.classify(addr("10.96.0.10").data()), "cluster");
  EXPECT_EQ(scope.classify(addr("10.96.0.11").data()), "external");
  EXPECT_EQ(scope.classify(addr("fd00:10:ffff::1").data()), "cluster");
  EXPECT_EQ(scope.classify(addr("fd00:11::1").data()), "external");
  EXPECT_EQ(scope.classify(addr("93.184.216.34").data()), "external");
}

TEST(NetworkScope, OddPrefixLengthsAndBadInput) {
  NetworkScope scope;
  ASSERT_TRUE(scope.addClusterCidr("192.0.2.128/25"));
  EXPECT_EQ(scope.classify(addr("192.0.2.200").data()), "cluster");
  EXPECT_EQ(scope.classify(addr("192.0.2.100").data()), "external");
  for (const char* bad : {"10.0.0.0/33", "fd00::/129", "nonsense/8", "10.0.0.0/", "10.0.0.0/x"}) {
    auto added = scope.addClusterCidr(bad);
    ASSERT_FALSE(added) << bad;
    EXPECT_EQ(added.error().code(), EINVAL) << bad;
  }
}

}  // namespace
}  // namespace apiwarden::flows
