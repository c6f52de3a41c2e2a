// HTTP/1.x parser over raw request and response bytes, fed whole, split and byte by byte.
#include "agent/protocols/http/parser.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace apiwarden::http {
namespace {

struct Event {
  std::string kind;  // "req", "resp", "done", "error"
  std::string a, b, host;
  uint64_t n = 0;
  CredentialScheme scheme = CredentialScheme::kNone;
  std::vector<std::string> credential_names;
  bool operator==(const Event&) const = default;
};

class Recorder : public ParserListener {
 public:
  void onRequestHead(const RequestHead& h) override {
    Event e{"req", std::string(h.method), std::string(h.target), std::string(h.host), h.header_bytes, h.scheme};
    for (const auto& c : h.credentials) e.credential_names.emplace_back(c.name);
    events.push_back(e);
    versions.push_back(h.version_minor);
  }
  ResponseBody onResponseHead(const ResponseHead& h) override {
    events.push_back({"resp", std::to_string(h.status), "", "", h.header_bytes});
    return next_body;
  }
  void onMessageComplete(uint64_t bytes) override { events.push_back({"done", "", "", "", bytes}); }
  void onParseError(ParseError e) override { events.push_back({"error", std::string(toString(e))}); }

  std::vector<std::string> summary() const {
    std::vector<std::string> out;
    for (const auto& e : events) out.push_back(e.kind + ":" + e.a + (e.b.empty() ? "" : " " + e.b));
    return out;
  }

  std::vector<Event> events;
  std::vector<int> versions;
  ResponseBody next_body = ResponseBody::kFromHeaders;
};

void feed(Parser& p, std::string_view s) { p.feed({reinterpret_cast<const uint8_t*>(s.data()), s.size()}); }

void feedBytewise(Parser& p, std::string_view s) {
  for (char c : s) feed(p, std::string_view(&c, 1));
}

std::vector<std::string> parse(Parser::Kind kind, std::string_view s) {
  Recorder r;
  Parser p(kind, r);
  feed(p, s);
  return r.summary();
}

using V = std::vector<std::string>;

TEST(HttpParser, SimpleGetReportsHeadAndBytes) {
  Recorder r;
  Parser p(Parser::Kind::kRequest, r);
  std::string req = "GET /users/7?x=1 HTTP/1.1\r\nHost: api.test\r\nAccept: */*\r\n\r\n";
  feed(p, req);
  ASSERT_EQ(r.events.size(), 2u);
  EXPECT_EQ(r.events[0], (Event{"req", "GET", "/users/7?x=1", "api.test", req.size(), CredentialScheme::kNone}));
  EXPECT_EQ(r.events[1].n, req.size());
  EXPECT_EQ(r.versions[0], 1);
}

TEST(HttpParser, ThousandKeepAliveRequestsInOneFeedAndByteByByte) {
  std::string all;
  for (int i = 0; i < 1000; ++i) all += "GET /i/" + std::to_string(i) + " HTTP/1.1\r\nHost: h\r\n\r\n";
  for (bool bytewise : {false, true}) {
    Recorder r;
    Parser p(Parser::Kind::kRequest, r);
    bytewise ? feedBytewise(p, all) : feed(p, all);
    ASSERT_EQ(r.events.size(), 2000u);
    for (int i = 0; i < 1000; ++i) EXPECT_EQ(r.events[2 * i].b, "/i/" + std::to_string(i));
  }
}

// The blank line that ends a head, in every line-ending style, found whole and when split anywhere.
TEST(HttpParser, HeadEndsAtTheFirstBlankLineWhateverTheLineEndings) {
  for (std::string eol : {"\r\n", "\n"}) {
    for (std::string blank : {"\r\n", "\n"}) {
      std::string head = "GET /a HTTP/1.1" + eol + "Host: h" + eol + "X-Empty:" + eol + blank;
      std::string both = head + "GET /b HTTP/1.1" + eol + "Host: h" + eol + blank;
      for (size_t split = 0; split <= both.size(); ++split) {
        Recorder r;
        Parser p(Parser::Kind::kRequest, r);
        feed(p, std::string_view(both).substr(0, split));
        feed(p, std::string_view(both).substr(split));
        ASSERT_EQ(r.summary(), (std::vector<std::string>{"req:GET /a", "done:", "req:GET /b", "done:"}))
            << "eol " << eol.size() << " blank " << blank.size() << " split " << split;
        EXPECT_EQ(r.events[0].n, head.size());
      }
    }
  }
}

TEST(HttpParser, SixKilobyteHeaderBlockInThreeFeeds) {
  std::string token(6000, 'A');
  std::string req = "POST /login HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer " + token +
                    "\r\nContent-Length: 4\r\n\r\nbody";
  Recorder r;
  Parser p(Parser::Kind::kRequest, r);
  feed(p, std::string_view(req).substr(0, 100));
  feed(p, std::string_view(req).substr(100, 3000));
  feed(p, std::string_view(req).substr(3100));
  ASSERT_EQ(r.events.size(), 2u);
  EXPECT_EQ(r.events[0].scheme, CredentialScheme::kBearer);
  EXPECT_EQ(r.events[0].n, req.size() - 4);
  EXPECT_EQ(r.events[1].n, req.size());
}

TEST(HttpParser, CredentialHeadersAndSchemes) {
  struct Case {
    std::string header;
    CredentialScheme scheme;
  };
  for (const auto& c : std::vector<Case>{{"Authorization: Basic dTpw", CredentialScheme::kBasic},
                                         {"authorization: bearer x.y.z", CredentialScheme::kBearer},
                                         {"Authorization: Token abc", CredentialScheme::kApiKey},
                                         {"Proxy-Authorization: Basic dTpw", CredentialScheme::kBasic},
                                         {"X-API-Key: k", CredentialScheme::kApiKey},
                                         {"api-key: k", CredentialScheme::kApiKey},
                                         {"X-Auth-Token: t", CredentialScheme::kApiKey},
                                         {"X-Api-Token: t", CredentialScheme::kApiKey},
                                         {"Cookie: session=1", CredentialScheme::kCookie},
                                         {"X-Other: not a credential", CredentialScheme::kNone}}) {
    Recorder r;
    Parser p(Parser::Kind::kRequest, r);
    feed(p, "GET / HTTP/1.1\r\n" + c.header + "\r\n\r\n");
    ASSERT_EQ(r.events.size(), 2u) << c.header;
    EXPECT_EQ(r.events[0].scheme, c.scheme) << c.header;
  }
  Recorder r;
  Parser p(Parser::Kind::kRequest, r);
  feed(p, "GET / HTTP/1.1\r\nCookie: a=b\r\nAuthorization: Bearer t\r\n\r\n");
  EXPECT_EQ(r.events[0].scheme, CredentialScheme::kCookie);  // the first one
  EXPECT_EQ(r.events[0].credential_names, (std::vector<std::string>{"Cookie", "Authorization"}));
}

TEST(HttpParser, ContentLengthAndChunkedBodies) {
  EXPECT_EQ(parse(Parser::Kind::kRequest,
                  "POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n"),
            (V{"req:POST /a", "done:", "req:GET /b", "done:"}));
  std::string chunked =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 999\r\n\r\n"
      "5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n";
  Recorder r;
  Parser p(Parser::Kind::kResponse, r);
  feed(p, chunked + "HTTP/1.1 204 No Content\r\n\r\n");
  EXPECT_EQ(r.summary(), (V{"resp:200", "done:", "resp:204", "done:"}));
  EXPECT_EQ(r.events[1].n, chunked.size());
}

TEST(HttpParser, ChunkedSplitAtEveryByte) {
  std::string msg = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
  for (size_t cut = 1; cut < msg.size(); ++cut) {
    Recorder r;
    Parser p(Parser::Kind::kResponse, r);
    feed(p, std::string_view(msg).substr(0, cut));
    feed(p, std::string_view(msg).substr(cut));
    ASSERT_EQ(r.summary(), (V{"resp:200", "done:"})) << "cut at " << cut;
    EXPECT_EQ(r.events[1].n, msg.size());
  }
}

TEST(HttpParser, SkippedBodyBytesCompleteTheMessage) {
  Recorder r;
  Parser p(Parser::Kind::kResponse, r);
  std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
  feed(p, head + std::string(1000, 'x'));
  p.skip(99000);
  feed(p, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(r.summary(), (V{"resp:200", "done:", "resp:404", "done:"}));
  EXPECT_EQ(r.events[1].n, head.size() + 100000);
}

TEST(HttpParser, GapInsideHeadersIsReportedAndTheNextMessageParses) {
  Recorder r;
  Parser p(Parser::Kind::kRequest, r);
  feed(p, "GET /lost HTTP/1.1\r\nHo");
  p.skip(50);
  feed(p, "rest of a header\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n");
  EXPECT_EQ(r.summary(), (V{"error:gap", "req:GET /next", "done:"}));
}

TEST(HttpParser, ResponseBodyRules) {
  Recorder r;
  Parser p(Parser::Kind::kResponse, r);
  r.next_body = ResponseBody::kNone;  // a HEAD response: no body whatever the length says
  feed(p, "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n");
  r.next_body = ResponseBody::kFromHeaders;
  feed(p, "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n");
  feed(p, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
  EXPECT_EQ(r.summary(), (V{"resp:200", "done:", "resp:304", "done:", "resp:100", "done:", "resp:201", "done:"}));
}

TEST(HttpParser, UpgradeAndConnectBecomeTunnels) {
  Recorder r;
  Parser p(Parser::Kind::kResponse, r);
  feed(p, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello GET / HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(p.inTunnel());
  EXPECT_EQ(r.summary(), (V{"resp:101", "done:"}));

  Recorder r2;
  Parser p2(Parser::Kind::kResponse, r2);
  r2.next_body = ResponseBody::kTunnel;
  feed(p2, "HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01");
  EXPECT_TRUE(p2.inTunnel());
  EXPECT_EQ(r2.summary(), (V{"resp:200", "done:"}));
}

TEST(HttpParser, BodyUntilCloseCompletesOnFinish) {
  Recorder r;
  Parser p(Parser::Kind::kResponse, r);
  feed(p, "HTTP/1.0 200 OK\r\n\r\nstreamed until the end");
  EXPECT_EQ(r.summary(), (V{"resp:200"}));
  p.finish();
  EXPECT_EQ(r.summary(), (V{"resp:200", "done:"}));
  EXPECT_EQ(r.events[1].n, std::string("HTTP/1.0 200 OK\r\n\r\nstreamed until the end").size());
}

TEST(HttpParser, EachMalformationIsReportedThenTheNextMessageParses) {
  const std::string next = "GET /ok HTTP/1.1\r\nHost: h\r\n\r\n";
  struct Case {
    std::string input;
    std::string error;
    bool head_was_valid = false;  // framing errors come after a reported head
  };
  for (const auto& c : std::vector<Case>{
           {"GET /a HTTP/2.0\r\n\r\n", "bad_start_line"},
           {"GET  HTTP/1.1\r\n\r\n", "bad_start_line"},
           {"GET /a HTTP/1.1\r\nNoColonHere\r\n\r\n", "bad_header"},
           {"GET /a HTTP/1.1\r\nBad Name: x\r\n\r\n", "bad_header"},
           {"POST /a HTTP/1.1\r\nContent-Length: 12x\r\n\r\n", "bad_content_length"},
           {"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "bad_content_length"},
           {"POST /a HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", "bad_content_length"},
           {"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad_chunk", true},
           {"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY\r\n", "bad_chunk", true},
       }) {
    V expected{"error:" + c.error, "req:GET /ok", "done:"};
    if (c.head_was_valid) expected.insert(expected.begin(), "req:POST /a");
    EXPECT_EQ(parse(Parser::Kind::kRequest, c.input + next), expected) << c.input;
  }
}

TEST(HttpParser, HeaderLimitsAreEnforced) {
  Limits limits;
  limits.max_header_bytes = 1024;
  limits.max_headers = 4;
  Recorder r;
  Parser p(Parser::Kind::kRequest, r, limits);
  feed(p, "GET /big HTTP/1.1\r\nX: " + std::string(2000, 'a') + "\r\n\r\n");
  feed(p, "GET /many HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n");
  feed(p, "GET /fine HTTP/1.1\r\nA: 1\r\n\r\n");
  EXPECT_EQ(r.summary(), (V{"error:header_too_large", "error:too_many_headers", "req:GET /fine", "done:"}));
}

TEST(HttpParser, GarbageThenValidTrafficIsFoundAgainUnderRandomSplits) {
  std::mt19937 rng(7);
  const std::string valid = "GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
  for (int round = 0; round < 300; ++round) {
    std::string input;
    for (int i = 0; i < 64; ++i) input.push_back(static_cast<char>(rng() & 0xff));
    input += "\r\n";  // the next message starts on a line of its own
    size_t garbage = input.size();
    for (int i = 0; i < 5; ++i) input += valid;
    Recorder r;
    Parser p(Parser::Kind::kRequest, r);
    for (size_t pos = 0; pos < input.size();) {
      size_t n = std::min<size_t>(1 + rng() % 40, input.size() - pos);
      feed(p, std::string_view(input).substr(pos, n));
      pos += n;
    }
    size_t found = 0;
    for (const auto& e : r.events) found += e.kind == "req" && e.b == "/x";
    EXPECT_GE(found, 4u) << "round " << round << " garbage " << garbage;  // the first may merge with garbage
  }
}

}  // namespace
}  // namespace apiwarden::http
