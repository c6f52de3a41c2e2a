// Credential identity: fingerprints, every carrier, JWT claims, Basic users, query redaction, keys.
#include "agent/credentials/credential.h"
#include "apiwarden/common/base64.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace apiwarden::credentials {
namespace {

std::string b64url(std::string_view in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  for (unsigned char c : in) {
    bits = bits << 8 | c;
    count += 8;
    while (count >= 6) out.push_back(kAlphabet[(bits >> (count -= 6)) & 63]);
  }
  if (count > 0) out.push_back(kAlphabet[(bits << (6 - count)) & 63]);
  return out;
}

// Parses a request head with a real parser and extracts its credential.
Credential extract(const Fingerprinter& f, const std::string& request) {
  struct Listener : http::ParserListener {
    const CredentialExtractor* extractor;
    Credential result;
    void onRequestHead(const http::RequestHead& head) override { result = extractor->extract(head); }
    http::ResponseBody onResponseHead(const http::ResponseHead&) override { return {}; }
    void onMessageComplete(uint64_t) override {}
    void onParseError(http::ParseError) override {}
  } listener;
  CredentialExtractor extractor(f);
  listener.extractor = &extractor;
  http::Parser parser(http::Parser::Kind::kRequest, listener);
  parser.feed({reinterpret_cast<const uint8_t*>(request.data()), request.size()});
  return listener.result;
}

class CredentialTest : public ::testing::Test {
 protected:
  Fingerprinter f_{std::vector<uint8_t>(32, 0x42)};
};

TEST_F(CredentialTest, FingerprintsAreKeyedStableAndShort) {
  Fingerprinter other(std::vector<uint8_t>(32, 0x43));
  EXPECT_EQ(f_.fingerprint("s3cret"), f_.fingerprint("s3cret"));
  EXPECT_NE(f_.fingerprint("s3cret"), f_.fingerprint("s3cret2"));
  EXPECT_NE(f_.fingerprint("s3cret"), other.fingerprint("s3cret"));
  EXPECT_EQ(f_.fingerprint("s3cret").size(), 32u);
  EXPECT_EQ(Fingerprinter(std::vector<uint8_t>(20, 0x0b)).fingerprint("Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b");  // RFC 4231 test case 1, truncated
}

TEST(Fingerprinter, KeepsItsKeyedStateThroughAMove) {
  Fingerprinter first(std::vector<uint8_t>(20, 0x0b));
  EXPECT_EQ(first.fingerprint("Hi There"), "b0344c61d8db38535ca8afceaf0bf12b");
  Fingerprinter moved(std::move(first));
  EXPECT_EQ(moved.fingerprint("Hi There"), "b0344c61d8db38535ca8afceaf0bf12b");  // RFC 4231 test case 1
}

// Recent fingerprints are remembered by secret: hits, collisions in one slot and evictions must all
// give what a fresh computation gives, also for secrets that share a prefix or differ in length.
TEST(Fingerprinter, RememberedFingerprintsMatchFreshOnes) {
  Fingerprinter remembering(std::vector<uint8_t>(32, 7));
  std::vector<std::string> secrets;
  for (size_t i = 0; i < 3 * Fingerprinter::kRecentSecrets; ++i) secrets.push_back("tok-" + std::string(i % 40, 'x') + std::to_string(i));
  std::vector<std::string> expected;
  for (const auto& s : secrets) expected.push_back(Fingerprinter(std::vector<uint8_t>(32, 7)).fingerprint(s));
  for (int pass = 0; pass < 3; ++pass) {
    for (size_t i = 0; i < secrets.size(); ++i) {
      ASSERT_EQ(remembering.fingerprint(secrets[i]), expected[i]) << "pass " << pass << " secret " << i;
      ASSERT_EQ(remembering.fingerprint(secrets[i]), expected[i]) << "again, pass " << pass << " secret " << i;
    }
  }
  EXPECT_NE(remembering.fingerprint("tok-"), remembering.fingerprint("tok-0"));
  EXPECT_NE(remembering.fingerprint(""), remembering.fingerprint(std::string(1, '\0')));
}

TEST_F(CredentialTest, EveryCarrier) {
  struct Case {
    std::string header_or_target;
    Scheme scheme;
    std::string source;
    std::string secret;
  };
  for (const auto& c : std::vector<Case>{
           {"Authorization: Bearer opaque-123", Scheme::kBearer, "header:authorization", "opaque-123"},
           {"Authorization: Token tok-9", Scheme::kApiKey, "header:authorization", "tok-9"},
           {"X-API-Key: key-1", Scheme::kApiKey, "header:x-api-key", "key-1"},
           {"Api-Key: key-2", Scheme::kApiKey, "header:api-key", "key-2"},
           {"X-Auth-Token: key-3", Scheme::kApiKey, "header:x-auth-token", "key-3"},
           {"Proxy-Authorization: Bearer px", Scheme::kBearer, "header:proxy-authorization", "px"},
           {"Cookie: _ga=1; sessionid=sess-7; theme=dark", Scheme::kCookie, "cookie:sessionid", "sess-7"},
           {"?api_key=q1", Scheme::kApiKey, "query:api_key", "q1"},
           {"?page=2&access_token=q2", Scheme::kApiKey, "query:access_token", "q2"},
           {"?token=q3&x=1", Scheme::kApiKey, "query:token", "q3"},
       }) {
    bool query = c.header_or_target.front() == '?';
    std::string request = "GET /r" + (query ? c.header_or_target : "") + " HTTP/1.1\r\nHost: h\r\n" +
                          (query ? "" : c.header_or_target + "\r\n") + "\r\n";
    Credential got = extract(f_, request);
    EXPECT_EQ(got.scheme, c.scheme) << c.header_or_target;
    EXPECT_EQ(got.source, c.source) << c.header_or_target;
    EXPECT_EQ(got.fingerprint, f_.fingerprint(c.secret)) << c.header_or_target;
  }
  EXPECT_EQ(extract(f_, "GET / HTTP/1.1\r\nCookie: theme=dark\r\n\r\n").scheme, Scheme::kNone);
  EXPECT_EQ(extract(f_, "GET / HTTP/1.1\r\n\r\n").scheme, Scheme::kNone);
}

TEST_F(CredentialTest, AuthorizationOutranksOtherCarriers) {
  auto c = extract(f_, "GET /x?api_key=q HTTP/1.1\r\nCookie: session=s\r\nX-API-Key: k\r\nAuthorization: Bearer b\r\n\r\n");
  EXPECT_EQ(c.source, "header:authorization");
  c = extract(f_, "GET /x?api_key=q HTTP/1.1\r\nCookie: session=s\r\n\r\n");
  EXPECT_EQ(c.source, "query:api_key");
}

TEST_F(CredentialTest, BasicKeepsTheUserNeverThePassword) {
  auto c = extract(f_, "GET / HTTP/1.1\r\nAuthorization: Basic YWxpY2U6cEBzc3cwcmQ=\r\n\r\n");  // alice:p@ssw0rd
  EXPECT_EQ(c.scheme, Scheme::kBasic);
  EXPECT_EQ(c.basic_user, "alice");
  EXPECT_EQ(c.fingerprint, f_.fingerprint("YWxpY2U6cEBzc3cwcmQ="));
}

TEST_F(CredentialTest, JwtClaimsAreDecodedNotVerified) {
  std::string token = b64url(R"({"alg":"RS256","kid":"k1","typ":"JWT"})") + "." +
                      b64url(R"({"iss":"https://idp.test","sub":"svc-a","aud":["api","x"],"azp":"cli",)"
                             R"("client_id":"c-1","iat":1700000000,"nbf":1700000000,"exp":1700003600.5,"jti":"j-9"})") +
                      ".c2lnbmF0dXJl";
  auto c = extract(f_, "GET / HTTP/1.1\r\nAuthorization: Bearer " + token + "\r\n\r\n");
  ASSERT_EQ(c.scheme, Scheme::kJwt);
  ASSERT_TRUE(c.jwt);
  EXPECT_EQ(c.jwt->alg, "RS256");
  EXPECT_EQ(c.jwt->kid, "k1");
  EXPECT_EQ(c.jwt->iss, "https://idp.test");
  EXPECT_EQ(c.jwt->sub, "svc-a");
  EXPECT_EQ(c.jwt->aud, "api");
  EXPECT_EQ(c.jwt->azp, "cli");
  EXPECT_EQ(c.jwt->client_id, "c-1");
  EXPECT_EQ(c.jwt->jti, "j-9");
  EXPECT_EQ(c.jwt->iat, 1700000000);
  EXPECT_EQ(c.jwt->exp, 1700003600);
  EXPECT_EQ(c.fingerprint, f_.fingerprint(token));
  // Not JWTs: wrong segment count, header without alg, payload that is not JSON.
  EXPECT_FALSE(decodeJwt("a.b"));
  EXPECT_FALSE(decodeJwt(b64url(R"({"typ":"JWT"})") + "." + b64url("{}") + ".s"));
  EXPECT_FALSE(decodeJwt(b64url(R"({"alg":"none"})") + "." + b64url("not json") + ".s"));
  EXPECT_FALSE(decodeJwt(std::string(20000, 'a') + ".b.c"));
}

TEST_F(CredentialTest, SecretQueryValuesAreRedacted) {
  EXPECT_EQ(redactTarget("/a?api_key=s1&page=2&TOKEN=s2&key=s3"), "/a?api_key=REDACTED&page=2&TOKEN=REDACTED&key=REDACTED");
  EXPECT_EQ(redactTarget("/a?page=2"), "/a?page=2");
  EXPECT_EQ(redactTarget("/plain"), "/plain");
  EXPECT_EQ(redactTarget("/a?access_token="), "/a?access_token=REDACTED");
}

TEST(Base64, BothAlphabetsWithAndWithoutPadding) {
  std::string out;
  ASSERT_TRUE(base64Decode("aGVsbG8=", out));
  EXPECT_EQ(out, "hello");
  ASSERT_TRUE(base64Decode("aGVsbG8", out));
  EXPECT_EQ(out, "hello");
  ASSERT_TRUE(base64Decode("-_8", out));
  EXPECT_EQ(out, "\xfb\xff");
  EXPECT_FALSE(base64Decode("a", out));
  EXPECT_FALSE(base64Decode("ab$d", out));
}

TEST(FingerprinterKey, GeneratedOnceThenReused) {
  std::string dir = "/tmp/apiwarden-key-" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  auto first = Fingerprinter::load("", dir);
  ASSERT_TRUE(first) << first.error().describe();
  struct stat st {};
  ASSERT_EQ(stat((dir + "/credential.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto second = Fingerprinter::load("", dir);
  ASSERT_TRUE(second);
  EXPECT_EQ(first->fingerprint("x"), second->fingerprint("x"));
  // An explicit key file wins; a short one is refused with a clear error.
  std::ofstream(dir + "/cluster.key") << "0123456789abcdef0123\n";
  auto cluster = Fingerprinter::load(dir + "/cluster.key", dir);
  ASSERT_TRUE(cluster);
  EXPECT_EQ(cluster->fingerprint("x"), Fingerprinter(std::vector<uint8_t>{'0', '1', '2', '3', '4', '5', '6', '7', '8',
                                                                          '9', 'a', 'b', 'c', 'd', 'e', 'f', '0', '1',
                                                                          '2', '3'})
                                           .fingerprint("x"));
  std::ofstream(dir + "/short.key") << "short";
  auto short_key = Fingerprinter::load(dir + "/short.key", dir);
  ASSERT_FALSE(short_key);
  EXPECT_NE(short_key.error().message().find("shorter than 16 bytes"), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace apiwarden::credentials
