// TLS ClientHello parsing over hand-built hellos: fields, fragmentation, truncation, corruption.
#include "agent/protocols/tls/client_hello.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace apiwarden::tls {
namespace {

using Bytes = std::vector<uint8_t>;

void put16(Bytes& b, size_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}

Bytes extension(uint16_t type, const Bytes& body) {
  Bytes e;
  put16(e, type);
  put16(e, body.size());
  e.insert(e.end(), body.begin(), body.end());
  return e;
}

Bytes sniExtension(const std::string& host) {
  Bytes list{0};  // host_name
  put16(list, host.size());
  list.insert(list.end(), host.begin(), host.end());
  Bytes body;
  put16(body, list.size());
  body.insert(body.end(), list.begin(), list.end());
  return extension(0, body);
}

Bytes alpnExtension(const std::vector<std::string>& protocols) {
  Bytes list;
  for (const auto& p : protocols) {
    list.push_back(static_cast<uint8_t>(p.size()));
    list.insert(list.end(), p.begin(), p.end());
  }
  Bytes body;
  put16(body, list.size());
  body.insert(body.end(), list.begin(), list.end());
  return extension(16, body);
}

Bytes versionsExtension(const std::vector<uint16_t>& versions) {
  Bytes body{static_cast<uint8_t>(versions.size() * 2)};
  for (uint16_t v : versions) put16(body, v);
  return extension(43, body);
}

// A ClientHello handshake message (type 1) with the given extensions.
Bytes handshake(const std::vector<Bytes>& extensions, uint8_t type = 1) {
  Bytes body;
  put16(body, 0x0303);
  body.insert(body.end(), 32, 0xab);             // random
  body.push_back(32);                            // session id
  body.insert(body.end(), 32, 0xcd);
  put16(body, 4);                                // two cipher suites
  put16(body, 0x1301);
  put16(body, 0x1302);
  body.push_back(1);                             // one compression method
  body.push_back(0);
  Bytes exts;
  for (const auto& e : extensions) exts.insert(exts.end(), e.begin(), e.end());
  put16(body, exts.size());
  body.insert(body.end(), exts.begin(), exts.end());
  Bytes msg{type, 0, static_cast<uint8_t>(body.size() >> 8), static_cast<uint8_t>(body.size())};
  msg.insert(msg.end(), body.begin(), body.end());
  return msg;
}

// Wraps a handshake message in TLS records of at most `fragment` bytes each.
Bytes records(const Bytes& msg, size_t fragment = 16384) {
  Bytes out;
  for (size_t pos = 0; pos < msg.size(); pos += fragment) {
    size_t n = std::min(fragment, msg.size() - pos);
    out.push_back(22);
    put16(out, 0x0301);
    put16(out, n);
    out.insert(out.end(), msg.begin() + static_cast<long>(pos), msg.begin() + static_cast<long>(pos + n));
  }
  return out;
}

Bytes modernHello() {
  return records(handshake({sniExtension("api.example.test"), alpnExtension({"h2", "http/1.1"}),
                            versionsExtension({0x2a2a, 0x0304, 0x0303})}));
}

TEST(ClientHello, ReadsSniAlpnAndVersions) {
  auto hello = parseClientHello(modernHello());
  ASSERT_TRUE(hello) << static_cast<int>(hello.error());
  EXPECT_EQ(hello->sni, "api.example.test");
  EXPECT_EQ(hello->alpn, (std::vector<std::string>{"h2", "http/1.1"}));
  EXPECT_EQ(hello->record_version, 0x0301);
  EXPECT_EQ(hello->legacy_version, 0x0303);
  EXPECT_EQ(hello->max_version, 0x0304);  // GREASE 0x2a2a ignored
  EXPECT_EQ(versionName(hello->max_version), "TLS1.3");
}

TEST(ClientHello, WithoutOptionalExtensions) {
  auto hello = parseClientHello(records(handshake({})));
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->sni, "");
  EXPECT_TRUE(hello->alpn.empty());
  EXPECT_EQ(hello->max_version, 0x0303);  // no supported_versions: TLS 1.2
}

TEST(ClientHello, HandshakeSpanningSeveralRecords) {
  auto msg = handshake({sniExtension("split.example"), alpnExtension({"http/1.1"})});
  auto hello = parseClientHello(records(msg, 40));
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->sni, "split.example");
}

TEST(ClientHello, EveryPrefixNeedsMoreAndNeverReadsPastTheEnd) {
  auto full = modernHello();
  for (size_t n = 1; n < full.size(); ++n) {
    Bytes prefix(full.begin(), full.begin() + static_cast<long>(n));  // exact-size copy: ASan sees overreads
    auto hello = parseClientHello(prefix);
    ASSERT_FALSE(hello) << n;
    EXPECT_EQ(hello.error(), HelloError::kNeedMore) << n;
  }
}

TEST(ClientHello, RejectsWhatIsNotAClientHello) {
  std::string http = "GET / HTTP/1.1\r\n\r\n";
  EXPECT_EQ(parseClientHello(Bytes(http.begin(), http.end())).error(), HelloError::kNotHandshake);
  EXPECT_EQ(parseClientHello(records(handshake({}, 2))).error(), HelloError::kNotClientHello);  // ServerHello
  Bytes bad_sni = records(handshake({sniExtension("bad\nhost")}));
  EXPECT_EQ(parseClientHello(bad_sni).error(), HelloError::kMalformed);
}

TEST(ClientHello, CorruptedLengthsAreMalformedOrIncompleteNeverAnOverread) {
  auto full = modernHello();
  for (size_t i = 0; i < full.size(); ++i) {
    for (uint8_t value : {uint8_t{0x00}, uint8_t{0xff}}) {
      Bytes corrupt = full;
      corrupt[i] = value;
      auto hello = parseClientHello(corrupt);  // any outcome but a crash or an ASan report
      if (hello) {
        EXPECT_LE(hello->sni.size(), 255u);
      }
    }
  }
  std::mt19937 rng(3);
  for (int round = 0; round < 2000; ++round) {
    Bytes noise(rng() % 600);
    for (auto& b : noise) b = static_cast<uint8_t>(rng());
    if (!noise.empty()) noise[0] = 22;
    (void)parseClientHello(noise);
  }
}

TEST(ClientHello, VersionNames) {
  EXPECT_EQ(versionName(0x0300), "SSL3.0");
  EXPECT_EQ(versionName(0x0301), "TLS1.0");
  EXPECT_EQ(versionName(0x0302), "TLS1.1");
  EXPECT_EQ(versionName(0x0303), "TLS1.2");
  EXPECT_EQ(versionName(0x7f1c), "0x7f1c");
}

}  // namespace
}  // namespace apiwarden::tls
