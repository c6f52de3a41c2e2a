// Incremental HTTP/1.x parser for one direction of one TCP stream.
//
// Bytes arrive in stream order through feed(); bytes that were never captured arrive as skip(n).
// The parser buffers at most one header block (Limits::max_header_bytes); bodies are never
// buffered, only counted and skipped (Content-Length, chunked, or until the connection ends).
// It never trusts a length from the wire to size a buffer. On malformed input or a gap inside a
// header block it reports an error and resynchronises on the next plausible start line.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace apiwarden::http {

enum class CredentialScheme : uint8_t { kNone, kBasic, kBearer, kApiKey, kCookie };

std::string_view toString(CredentialScheme scheme);  // "none", "basic", "bearer", "api_key", "cookie"

// A credential-carrying header (Authorization, Proxy-Authorization, X-API-Key, Api-Key,
// X-Auth-Token, Cookie). Views into the parser's buffer: valid only during the callback, and the
// value must never be copied, logged or stored (a later stage fingerprints it).
struct CredentialHeader {
  std::string_view name;
  std::string_view value;
  CredentialScheme scheme;
};

struct RequestHead {
  std::string_view method;
  std::string_view target;  // as sent: path with query string
  std::string_view host;    // Host header, empty if absent
  uint8_t version_minor;    // 0 or 1 (HTTP/1.x)
  CredentialScheme scheme;  // of the first credential header; kNone if there is none
  std::span<const CredentialHeader> credentials;
  uint64_t header_bytes;  // start line through the blank line
};

struct ResponseHead {
  uint16_t status;
  uint8_t version_minor;
  uint64_t header_bytes;
};

enum class ParseError : uint8_t {
  kBadStartLine,     // not a request/response line
  kBadHeader,        // header line without a colon, bad characters
  kHeaderTooLarge,   // header block over Limits::max_header_bytes
  kTooManyHeaders,   // over Limits::max_headers
  kBadContentLength, // non-numeric, conflicting, or over 2^62
  kBadChunk,         // malformed chunk size line or chunk terminator
  kGap,              // bytes missing inside a header block or chunk framing
};
inline constexpr int kParseErrorCount = 7;
std::string_view toString(ParseError error);  // "bad_start_line", "bad_header", ... snake_case

// How the body of a response is delimited, decided by whoever knows the request.
enum class ResponseBody : uint8_t {
  kFromHeaders,  // the usual rules: 1xx/204/304 none, Content-Length, chunked, else until close
  kNone,         // response to HEAD (or a 2xx to CONNECT: the stream becomes a tunnel, see below)
  kTunnel,       // 2xx to CONNECT or 101 Switching Protocols: everything after the head is opaque
};

class ParserListener {
 public:
  virtual ~ParserListener() = default;
  virtual void onRequestHead(const RequestHead& head) = 0;
  // The return value tells the parser how the response body is delimited.
  virtual ResponseBody onResponseHead(const ResponseHead& head) = 0;
  // A message (head + body) ended; message_bytes counts head, body and chunk framing, skipped
  // bytes included. Interim 1xx responses (other than 101) complete with no body.
  virtual void onMessageComplete(uint64_t message_bytes) = 0;
  virtual void onParseError(ParseError error) = 0;
};

struct Limits {
  uint32_t max_header_bytes = 32 * 1024;
  uint32_t max_headers = 128;
  uint32_t max_credentials = 8;  // credential headers reported per message; more are ignored
};

class Parser {
 public:
  enum class Kind : uint8_t { kRequest, kResponse };

  Parser(Kind kind, ParserListener& listener, Limits limits = {});
  ~Parser();  // wipes the header buffer (it may hold credentials)
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  void feed(std::span<const uint8_t> data);
  void skip(uint64_t bytes);  // bytes of the stream that were not captured
  // The stream ended (connection closed): completes a body delimited by close; a partial
  // message is dropped.
  void finish();

  bool inTunnel() const;  // after CONNECT/Upgrade: further bytes are ignored

 private:
  struct Impl;
  Impl* impl_;
};

}  // namespace apiwarden::http
