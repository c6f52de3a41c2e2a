// Enforcement's user-space parts that need no kernel: destinations, auto-response policies, and
// the token hash the kernel must agree with (the BPF tests check that agreement on the kernel).
#include <gtest/gtest.h>

#include "agent/credentials/token_hash.h"
#include "agent/enforce/destination.h"
#include "agent/enforce/responses.h"

namespace {

using apiwarden::enforce::covers;
using apiwarden::enforce::parseDestination;
using apiwarden::enforce::parseResponses;

TEST(Destination, ParsesAddressesPrefixesAndPorts) {
  struct Case {
    const char* text;
    int prefix;
    uint16_t port;
    const char* shown;
  } cases[] = {
      {"10.0.0.5", 128, 0, "10.0.0.5"},
      {"10.1.2.3/8", 104, 0, "10.0.0.0/8"},  // host bits cleared
      {"10.0.0.5:443", 128, 443, "10.0.0.5:443"},
      {"10.0.0.0/8:5432", 104, 5432, "10.0.0.0/8:5432"},
      {"::1", 128, 0, "::1"},
      {"fd00::1/8", 8, 0, "fd00::/8"},
      {"[fd00::1/8]:443", 8, 443, "[fd00::/8]:443"},
      {"[::1]:80", 128, 80, "[::1]:80"},
      {"0.0.0.0/0", 96, 0, "0.0.0.0/0"},
  };
  for (const auto& c : cases) {
    auto d = parseDestination(c.text);
    ASSERT_TRUE(d) << c.text << ": " << d.error().message();
    EXPECT_EQ(d->prefix, c.prefix) << c.text;
    EXPECT_EQ(d->port, c.port) << c.text;
    EXPECT_EQ(d->text, c.shown) << c.text;
  }
  auto v4 = parseDestination("10.0.0.5");
  EXPECT_EQ((std::array<uint8_t, 4>{v4->addr[10], v4->addr[11], v4->addr[12], v4->addr[15]}),
            (std::array<uint8_t, 4>{0xff, 0xff, 10, 5}))
      << "IPv4 is stored v4-mapped, as the kernel sees v4-mapped connects";
}

TEST(Destination, RefusesMalformedInput) {
  for (const char* text : {"", "10.0.0", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.1:0", "10.0.0.1:70000",
                           "10.0.0.1:http", "[::1]", "[::1]x", "::1/129", "fd00::/8:443", "host.example:80",
                           "10.0.0.0/8/8", "1.2.3.4:5:6"}) {
    auto d = parseDestination(text);
    EXPECT_FALSE(d) << text;
    if (!d) {
      EXPECT_NE(d.error().message().find("malformed destination"), std::string::npos) << d.error().message();
    }
  }
}

TEST(Destination, Covers) {
  auto wide = parseDestination("10.0.0.0/8"), narrow = parseDestination("10.1.0.0/16"),
       other = parseDestination("192.168.0.0/16");
  EXPECT_TRUE(covers(*wide, *narrow));
  EXPECT_FALSE(covers(*narrow, *wide));
  EXPECT_FALSE(covers(*wide, *other));
  EXPECT_TRUE(covers(*wide, *wide));
}

TEST(Responses, ParsesPolicies) {
  auto policies = parseResponses(
      "responses:\n"
      "  - detector: shared_credential\n    action: revoke\n    ttl: 15m\n"
      "  - detector: object_enumeration\n    min_severity: medium\n    action: cut\n");
  ASSERT_TRUE(policies) << policies.error().message();
  ASSERT_EQ(policies->size(), 2u);
  EXPECT_EQ((*policies)[0].detector, "shared_credential");
  EXPECT_EQ((*policies)[0].min_severity, apiwarden::detect::Severity::kHigh) << "the default";
  EXPECT_EQ((*policies)[0].ttl_s, 900u);
  EXPECT_EQ((*policies)[1].action, "cut");
  EXPECT_EQ((*policies)[1].min_severity, apiwarden::detect::Severity::kMedium);
  EXPECT_EQ((*policies)[1].ttl_s, 0u) << "0: the agent's default";
  EXPECT_TRUE(parseResponses("")->empty());
}

TEST(Responses, RefusesMalformedPolicies) {
  struct Case {
    const char* yaml;
    const char* message;
  } cases[] = {
      {"responses: [", "not YAML"},
      {"- a\n", "top level"},
      {"policies: []\n", "unknown key \"policies\""},
      {"responses: {}\n", "must be a list"},
      {"responses:\n  - detector: nope\n    action: cut\n", "unknown detector"},
      {"responses:\n  - detector: rate_spike\n    action: delete\n", "action must be cut or revoke"},
      {"responses:\n  - detector: rate_spike\n    action: cut\n    ttl: soon\n", "invalid duration"},
      {"responses:\n  - detector: rate_spike\n    action: cut\n    min_severity: huge\n", "min_severity"},
      {"responses:\n  - detector: rate_spike\n    action: cut\n    when: now\n", "unknown key \"when\""},
      {"responses:\n  - detector: [a]\n    action: cut\n", "must be a string"},
  };
  for (const auto& c : cases) {
    auto policies = parseResponses(c.yaml);
    ASSERT_FALSE(policies) << c.yaml;
    EXPECT_NE(policies.error().message().find(c.message), std::string::npos) << c.yaml << " -> "
                                                                              << policies.error().message();
  }
}

TEST(TokenHash, HashesTheLastWordOfAHeaderValue) {
  using apiwarden::credentials::tokenHash;
  std::array<uint64_t, 2> key{0x1234, 0x5678};
  uint64_t token = tokenHash(key, "abc.def");
  EXPECT_NE(token, 0u);
  EXPECT_EQ(tokenHash(key, "Bearer abc.def"), token);
  EXPECT_EQ(tokenHash(key, "bearer \t abc.def  \t"), token) << "scheme case and blanks do not matter";
  EXPECT_NE(tokenHash(key, "Bearer abc.deF"), token);
  EXPECT_NE(tokenHash({0x1234, 0x5679}, "abc.def"), token) << "keyed";
  EXPECT_EQ(tokenHash(key, "   "), 0u);
}

}  // namespace
