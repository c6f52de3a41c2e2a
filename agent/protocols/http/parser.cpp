#include "agent/protocols/http/parser.h"

#include "apiwarden/common/ascii.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <string>

namespace apiwarden::http {

std::string_view toString(CredentialScheme scheme) {
  switch (scheme) {
    case CredentialScheme::kNone: return "none";
    case CredentialScheme::kBasic: return "basic";
    case CredentialScheme::kBearer: return "bearer";
    case CredentialScheme::kApiKey: return "api_key";
    case CredentialScheme::kCookie: return "cookie";
  }
  return "none";
}

std::string_view toString(ParseError error) {
  switch (error) {
    case ParseError::kBadStartLine: return "bad_start_line";
    case ParseError::kBadHeader: return "bad_header";
    case ParseError::kHeaderTooLarge: return "header_too_large";
    case ParseError::kTooManyHeaders: return "too_many_headers";
    case ParseError::kBadContentLength: return "bad_content_length";
    case ParseError::kBadChunk: return "bad_chunk";
    case ParseError::kGap: return "gap";
  }
  return "unknown";
}

namespace {

constexpr size_t kMaxMethod = 32;
constexpr size_t kMaxChunkLine = 1024;
constexpr size_t kResyncProbe = kMaxMethod + 1;
constexpr uint64_t kMaxContentLength = uint64_t{1} << 62;

// RFC 9110 token characters.
constexpr std::array<bool, 256> kTchar = [] {
  std::array<bool, 256> table{};
  for (int c = '0'; c <= '9'; ++c) table[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) table[c] = table[c - 'a' + 'A'] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) table[static_cast<unsigned char>(c)] = true;
  return table;
}();

bool isTchar(unsigned char c) { return kTchar[c]; }

// Just past the blank line that ends a header block ("\r\n\r\n", "\n\n" or a mix), or npos: one
// memchr per line, looking at what follows each line feed.
size_t headEnd(std::string_view data, size_t from) {
  const char* p = data.data();
  size_t n = data.size();
  while (from < n) {
    const char* newline = static_cast<const char*>(std::memchr(p + from, '\n', n - from));
    if (!newline) break;
    size_t next = static_cast<size_t>(newline - p) + 1;
    if (next < n && p[next] == '\n') return next + 1;
    if (next + 1 < n && p[next] == '\r' && p[next + 1] == '\n') return next + 2;
    from = next;
  }
  return std::string_view::npos;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

void wipe(std::string& s) {
  if (!s.empty()) explicit_bzero(s.data(), s.size());
  s.clear();
}

// The credential scheme a header carries, or kNone if it carries none.
CredentialScheme credentialScheme(std::string_view name, std::string_view value) {
  if (iequals(name, "authorization") || iequals(name, "proxy-authorization")) {
    std::string_view scheme = value.substr(0, value.find(' '));
    if (iequals(scheme, "basic")) return CredentialScheme::kBasic;
    if (iequals(scheme, "bearer")) return CredentialScheme::kBearer;
    return CredentialScheme::kApiKey;
  }
  if (iequals(name, "x-api-key") || iequals(name, "api-key") || iequals(name, "x-auth-token") ||
      iequals(name, "x-api-token")) {
    return CredentialScheme::kApiKey;
  }
  if (iequals(name, "cookie")) return CredentialScheme::kCookie;
  return CredentialScheme::kNone;
}

enum class Plausible { kYes, kNo, kNeedMore };

// Whether bytes at a line start may begin a start line of this kind.
Plausible plausibleStart(Parser::Kind kind, std::string_view s) {
  if (kind == Parser::Kind::kResponse) {
    std::string_view prefix = "HTTP/1.";
    size_t n = std::min(s.size(), prefix.size());
    if (s.substr(0, n) != prefix.substr(0, n)) return Plausible::kNo;
    return n == prefix.size() ? Plausible::kYes : Plausible::kNeedMore;
  }
  for (size_t i = 0; i < s.size() && i <= kMaxMethod; ++i) {
    if (s[i] == ' ') return i > 0 ? Plausible::kYes : Plausible::kNo;
    if (s[i] < 'A' || s[i] > 'Z') return Plausible::kNo;
  }
  return s.size() <= kMaxMethod ? Plausible::kNeedMore : Plausible::kNo;
}

}  // namespace

struct Parser::Impl {
  enum class State : uint8_t { kHead, kBody, kChunkSize, kChunkData, kChunkEnd, kTrailers, kUntilClose, kTunnel, kResync };

  Impl(Kind k, ParserListener& l, Limits lim) : kind(k), listener(l), limits(lim) {}

  Kind kind;
  ParserListener& listener;
  Limits limits;
  State state = State::kHead;
  std::string buf;           // a header block (or resync probe) spanning feeds
  std::string line;          // a chunk-size line or trailer line spanning feeds
  size_t scanned = 0;        // bytes of buf already searched for the end of the head
  uint64_t remaining = 0;    // body or chunk bytes still to come
  uint64_t message_bytes = 0;
  uint32_t trailer_lines = 0;
  bool at_line_start = true;
  std::array<CredentialHeader, 16> credentials{};

  void feed(const char* p, size_t n);
  void skip(uint64_t n);
  size_t feedHead(const char* p, size_t n);
  size_t feedBody(size_t n);
  size_t feedLine(const char* p, size_t n);
  size_t feedResync(const char* p, size_t n);
  // What the header lines say about framing and identity.
  struct HeadFields {
    uint64_t content_length = 0;
    bool has_content_length = false;
    bool chunked = false;
    std::string_view host;
    size_t credential_count = 0;
  };

  bool parseHead(std::string_view head);
  bool parseHeaders(std::string_view lines, HeadFields& fields);
  void startBody(const HeadFields& fields, bool until_close);
  void lineDone(std::string_view text);
  void complete();
  void error(ParseError e, bool line_start);
};

void Parser::Impl::feed(const char* p, size_t n) {
  while (n > 0) {
    size_t used = 0;
    switch (state) {
      case State::kHead: used = feedHead(p, n); break;
      case State::kBody:
      case State::kChunkData: used = feedBody(n); break;
      case State::kChunkSize:
      case State::kChunkEnd:
      case State::kTrailers: used = feedLine(p, n); break;
      case State::kUntilClose: message_bytes += n; used = n; break;
      case State::kTunnel: used = n; break;
      case State::kResync: used = feedResync(p, n); break;
    }
    p += used;
    n -= used;
  }
}

// Accumulates a header block; parses it in place when it arrives whole in one feed.
size_t Parser::Impl::feedHead(const char* p, size_t n) {
  if (buf.empty()) {
    size_t blank = 0;  // empty lines between messages are tolerated
    while (blank < n && (p[blank] == '\r' || p[blank] == '\n')) ++blank;
    if (blank > 0) return blank;
    std::string_view data(p, n);
    size_t head_len = headEnd(data, 0);
    if (head_len != std::string_view::npos && head_len <= limits.max_header_bytes) {
      parseHead(data.substr(0, head_len));
      return head_len;
    }
  }
  size_t room = limits.max_header_bytes - buf.size();
  size_t take = std::min(n, room);
  buf.append(p, take);
  size_t head_len = headEnd(buf, scanned > 2 ? scanned - 2 : 0);  // a blank line may straddle the feeds
  if (head_len == std::string::npos) {
    scanned = buf.size();
    if (take < n || buf.size() >= limits.max_header_bytes) {
      error(ParseError::kHeaderTooLarge, false);
      return take;
    }
    return take;
  }
  size_t used = take - (buf.size() - head_len);
  buf.resize(head_len);
  std::string head = std::move(buf);
  buf.clear();
  scanned = 0;
  parseHead(head);
  wipe(head);
  return used;
}

size_t Parser::Impl::feedBody(size_t n) {
  size_t take = static_cast<size_t>(std::min<uint64_t>(n, remaining));
  remaining -= take;
  message_bytes += take;
  if (remaining == 0) {
    if (state == State::kBody) {
      complete();
    } else {
      state = State::kChunkEnd;
    }
  }
  return take;
}

// One line of chunk framing or trailers, possibly spanning feeds.
size_t Parser::Impl::feedLine(const char* p, size_t n) {
  const char* newline = static_cast<const char*>(std::memchr(p, '\n', n));
  size_t take = newline ? static_cast<size_t>(newline - p) + 1 : n;
  size_t limit = state == State::kTrailers ? limits.max_header_bytes : kMaxChunkLine;
  if (line.size() + take > limit) {
    wipe(line);
    error(state == State::kTrailers ? ParseError::kHeaderTooLarge : ParseError::kBadChunk, newline != nullptr);
    return take;
  }
  line.append(p, take);
  message_bytes += take;
  if (newline) {
    std::string text = std::move(line);
    line.clear();
    lineDone(trim(std::string_view(text).substr(0, text.size() - 1)));
    wipe(text);
  }
  return take;
}

void Parser::Impl::lineDone(std::string_view text) {
  switch (state) {
    case State::kChunkSize: {
      std::string_view digits = trim(text.substr(0, text.find(';')));
      if (digits.empty() || digits.size() > 16) return error(ParseError::kBadChunk, true);
      uint64_t size = 0;
      for (char c : digits) {
        int v = std::isdigit(static_cast<unsigned char>(c)) ? c - '0'
                : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (v < 0) return error(ParseError::kBadChunk, true);
        size = size << 4 | static_cast<uint64_t>(v);
      }
      if (size > kMaxContentLength) return error(ParseError::kBadChunk, true);
      remaining = size;
      state = size == 0 ? State::kTrailers : State::kChunkData;
      trailer_lines = 0;
      return;
    }
    case State::kChunkEnd:
      if (!text.empty()) return error(ParseError::kBadChunk, true);
      state = State::kChunkSize;
      return;
    case State::kTrailers:
      if (text.empty()) return complete();
      if (++trailer_lines > limits.max_headers) return error(ParseError::kTooManyHeaders, true);
      return;
    default:
      return;
  }
}

// Looks for the next line start that may begin a message; keeps a short probe across feeds.
size_t Parser::Impl::feedResync(const char* p, size_t n) {
  if (!buf.empty()) {  // a probe from the previous feed, starting at a line start
    size_t take = std::min(n, kResyncProbe - std::min(buf.size(), kResyncProbe));
    std::string probe = buf + std::string(p, take);
    switch (plausibleStart(kind, probe)) {
      case Plausible::kYes:
        state = State::kHead;  // buf already holds the start of the head
        scanned = 0;
        return 0;
      case Plausible::kNeedMore:
        buf = probe;
        return take;
      case Plausible::kNo:
        wipe(buf);
        at_line_start = false;
        break;
    }
  }
  size_t pos = 0;
  while (pos < n) {
    if (at_line_start) {
      switch (plausibleStart(kind, std::string_view(p + pos, n - pos))) {
        case Plausible::kYes:
          state = State::kHead;
          return pos;
        case Plausible::kNeedMore:
          buf.assign(p + pos, n - pos);
          return n;
        case Plausible::kNo:
          break;
      }
    }
    const char* newline = static_cast<const char*>(std::memchr(p + pos, '\n', n - pos));
    if (!newline) {
      at_line_start = false;
      return n;
    }
    pos = static_cast<size_t>(newline - p) + 1;
    at_line_start = true;
  }
  return n;
}

bool Parser::Impl::parseHead(std::string_view head) {
  size_t eol = head.find('\n');
  std::string_view start = trim(head.substr(0, eol));
  std::string_view rest = head.substr(eol + 1);
  HeadFields fields;

  if (kind == Kind::kRequest) {
    size_t sp1 = start.find(' ');
    size_t sp2 = sp1 == std::string_view::npos ? sp1 : start.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || sp1 == 0 || sp1 > kMaxMethod || sp2 == sp1 + 1) {
      error(ParseError::kBadStartLine, true);
      return false;
    }
    std::string_view method = start.substr(0, sp1), target = start.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string_view version = start.substr(sp2 + 1);
    bool ok = std::all_of(method.begin(), method.end(), [](char c) { return isTchar(c); }) &&
              std::none_of(target.begin(), target.end(), [](char c) { return c <= 0x20 || c == 0x7f; }) &&
              (version == "HTTP/1.1" || version == "HTTP/1.0");
    if (!ok) {
      error(ParseError::kBadStartLine, true);
      return false;
    }
    if (!parseHeaders(rest, fields)) return false;
    RequestHead out{method, target, fields.host, static_cast<uint8_t>(version.back() - '0'),
                    fields.credential_count ? credentials[0].scheme : CredentialScheme::kNone,
                    std::span<const CredentialHeader>(credentials.data(), fields.credential_count), head.size()};
    message_bytes = head.size();
    listener.onRequestHead(out);
    startBody(fields, false);
    return true;
  }

  bool ok = start.size() >= 12 && start.substr(0, 7) == "HTTP/1." && (start[7] == '0' || start[7] == '1') &&
            start[8] == ' ' && std::isdigit(static_cast<unsigned char>(start[9])) &&
            std::isdigit(static_cast<unsigned char>(start[10])) && std::isdigit(static_cast<unsigned char>(start[11])) &&
            (start.size() == 12 || start[12] == ' ');
  if (!ok) {
    error(ParseError::kBadStartLine, true);
    return false;
  }
  if (!parseHeaders(rest, fields)) return false;
  uint16_t status = static_cast<uint16_t>((start[9] - '0') * 100 + (start[10] - '0') * 10 + (start[11] - '0'));
  message_bytes = head.size();
  ResponseBody body = listener.onResponseHead(ResponseHead{status, static_cast<uint8_t>(start[7] - '0'), head.size()});
  if (body == ResponseBody::kTunnel || (body == ResponseBody::kFromHeaders && status == 101)) {
    listener.onMessageComplete(message_bytes);
    message_bytes = 0;
    state = State::kTunnel;
    return true;
  }
  bool no_body = body == ResponseBody::kNone || status < 200 || status == 204 || status == 304;
  if (no_body) {
    complete();
    return true;
  }
  startBody(fields, true);
  return true;
}

bool Parser::Impl::parseHeaders(std::string_view lines, HeadFields& fields) {
  uint32_t count = 0;
  while (!lines.empty()) {
    size_t eol = lines.find('\n');
    std::string_view line_text = lines.substr(0, eol);
    lines = eol == std::string_view::npos ? std::string_view() : lines.substr(eol + 1);
    if (!line_text.empty() && line_text.back() == '\r') line_text.remove_suffix(1);
    if (line_text.empty()) break;
    if (line_text.front() == ' ' || line_text.front() == '\t') continue;  // obsolete folding: ignored
    if (++count > limits.max_headers) {
      error(ParseError::kTooManyHeaders, true);
      return false;
    }
    size_t colon = line_text.find(':');
    std::string_view name = line_text.substr(0, colon);
    if (colon == std::string_view::npos || name.empty() ||
        !std::all_of(name.begin(), name.end(), [](char c) { return isTchar(c); })) {
      error(ParseError::kBadHeader, true);
      return false;
    }
    std::string_view value = trim(line_text.substr(colon + 1));
    if (iequals(name, "host")) {
      fields.host = value;
    } else if (iequals(name, "content-length")) {
      uint64_t parsed = 0;
      bool digits = !value.empty() && value.size() <= 19 &&
                    std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; });
      for (char c : value) parsed = parsed * 10 + static_cast<uint64_t>(c - '0');
      if (!digits || parsed > kMaxContentLength || (fields.has_content_length && parsed != fields.content_length)) {
        error(ParseError::kBadContentLength, true);
        return false;
      }
      fields.content_length = parsed;
      fields.has_content_length = true;
    } else if (iequals(name, "transfer-encoding")) {
      std::string_view last = trim(value.substr(value.rfind(',') == std::string_view::npos ? 0 : value.rfind(',') + 1));
      fields.chunked = iequals(last, "chunked");
    } else if (auto scheme = credentialScheme(name, value); scheme != CredentialScheme::kNone) {
      if (fields.credential_count < std::min<size_t>(limits.max_credentials, credentials.size())) {
        credentials[fields.credential_count++] = CredentialHeader{name, value, scheme};
      }
    }
  }
  return true;
}

void Parser::Impl::startBody(const HeadFields& fields, bool until_close) {
  if (fields.chunked) {
    state = State::kChunkSize;
  } else if (fields.content_length > 0) {
    state = State::kBody;
    remaining = fields.content_length;
  } else if (until_close && !fields.has_content_length) {
    state = State::kUntilClose;
  } else {
    complete();
  }
}

void Parser::Impl::complete() {
  uint64_t bytes = message_bytes;
  message_bytes = 0;
  remaining = 0;
  state = State::kHead;
  at_line_start = true;
  listener.onMessageComplete(bytes);
}

void Parser::Impl::error(ParseError e, bool line_start) {
  wipe(buf);
  wipe(line);
  scanned = 0;
  message_bytes = 0;
  remaining = 0;
  state = State::kResync;
  at_line_start = line_start;
  listener.onParseError(e);
}

void Parser::Impl::skip(uint64_t n) {
  switch (state) {
    case State::kBody:
    case State::kChunkData: {
      uint64_t take = std::min(n, remaining);
      feedBody(static_cast<size_t>(take));
      if (n > take) error(ParseError::kGap, false);  // the gap runs on into framing or the next head
      return;
    }
    case State::kUntilClose: message_bytes += n; return;
    case State::kTunnel: return;
    case State::kResync:
      wipe(buf);
      at_line_start = false;
      return;
    default: error(ParseError::kGap, false); return;
  }
}

Parser::Parser(Kind kind, ParserListener& listener, Limits limits) : impl_(new Impl(kind, listener, limits)) {}

Parser::~Parser() {
  wipe(impl_->buf);
  wipe(impl_->line);
  delete impl_;
}

void Parser::feed(std::span<const uint8_t> data) {
  impl_->feed(reinterpret_cast<const char*>(data.data()), data.size());
}

void Parser::skip(uint64_t bytes) {
  if (bytes > 0) impl_->skip(bytes);
}

void Parser::finish() {
  if (impl_->state == Impl::State::kUntilClose) impl_->complete();
  wipe(impl_->buf);
  wipe(impl_->line);
  impl_->state = Impl::State::kHead;
}

bool Parser::inTunnel() const { return impl_->state == Impl::State::kTunnel; }

}  // namespace apiwarden::http
