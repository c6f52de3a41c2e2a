#include "agent/protocols/tls/client_hello.h"

#include <fmt/format.h>

#include <algorithm>

namespace apiwarden::tls {
namespace {

constexpr uint8_t kHandshakeRecord = 22;
constexpr uint8_t kClientHelloType = 1;
constexpr uint16_t kExtServerName = 0;
constexpr uint16_t kExtAlpn = 16;
constexpr uint16_t kExtSupportedVersions = 43;
constexpr size_t kMaxSni = 255;
constexpr size_t kMaxAlpn = 16;
constexpr size_t kMaxHandshake = 1 << 16;  // a ClientHello beyond 64 KiB is not one we parse

// A bounds-checked big-endian reader over a byte span.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> data) : data_(data) {}
  size_t left() const { return data_.size() - pos_; }
  bool u8(uint8_t& v) { return read(1, v); }
  bool u16(uint16_t& v) { return read(2, v); }
  bool u24(uint32_t& v) { return read(3, v); }
  bool skip(size_t n) {
    if (n > left()) return false;
    pos_ += n;
    return true;
  }
  // A sub-reader over the next n bytes (consumed here).
  bool sub(size_t n, Reader& out) {
    if (n > left()) return false;
    out = Reader(data_.subspan(pos_, n));
    pos_ += n;
    return true;
  }
  std::span<const uint8_t> rest() const { return data_.subspan(pos_); }

 private:
  template <typename T>
  bool read(size_t n, T& v) {
    if (n > left()) return false;
    uint32_t value = 0;
    for (size_t i = 0; i < n; ++i) value = value << 8 | data_[pos_ + i];
    v = static_cast<T>(value);
    pos_ += n;
    return true;
  }

  std::span<const uint8_t> data_;
  size_t pos_ = 0;
};

bool isGrease(uint16_t v) { return (v & 0x0f0f) == 0x0a0a && (v >> 8) == (v & 0xff); }

std::expected<void, HelloError> parseSni(Reader ext, ClientHello& hello) {
  uint16_t list_len;
  Reader list(std::span<const uint8_t>{});
  if (!ext.u16(list_len) || !ext.sub(list_len, list)) return std::unexpected(HelloError::kMalformed);
  while (list.left() > 0) {
    uint8_t type;
    uint16_t len;
    Reader name(std::span<const uint8_t>{});
    if (!list.u8(type) || !list.u16(len) || !list.sub(len, name)) return std::unexpected(HelloError::kMalformed);
    if (type != 0 || !hello.sni.empty()) continue;
    if (len == 0 || len > kMaxSni) return std::unexpected(HelloError::kMalformed);
    for (uint8_t c : name.rest()) {
      if (c <= 0x20 || c >= 0x7f) return std::unexpected(HelloError::kMalformed);
    }
    hello.sni.assign(name.rest().begin(), name.rest().end());
  }
  return {};
}

std::expected<void, HelloError> parseAlpn(Reader ext, ClientHello& hello) {
  uint16_t list_len;
  Reader list(std::span<const uint8_t>{});
  if (!ext.u16(list_len) || !ext.sub(list_len, list)) return std::unexpected(HelloError::kMalformed);
  while (list.left() > 0) {
    uint8_t len;
    Reader proto(std::span<const uint8_t>{});
    if (!list.u8(len) || len == 0 || !list.sub(len, proto)) return std::unexpected(HelloError::kMalformed);
    if (hello.alpn.size() < kMaxAlpn) hello.alpn.emplace_back(proto.rest().begin(), proto.rest().end());
  }
  return {};
}

std::expected<void, HelloError> parseSupportedVersions(Reader ext, ClientHello& hello) {
  uint8_t len;
  Reader list(std::span<const uint8_t>{});
  if (!ext.u8(len) || len % 2 != 0 || !ext.sub(len, list)) return std::unexpected(HelloError::kMalformed);
  uint16_t version;
  while (list.u16(version)) {
    if (!isGrease(version)) hello.max_version = std::max(hello.max_version, version);
  }
  return {};
}

std::expected<ClientHello, HelloError> parseBody(Reader body, ClientHello hello) {
  uint8_t session_len, compression_len;
  uint16_t suites_len;
  if (!body.u16(hello.legacy_version) || !body.skip(32) || !body.u8(session_len) || session_len > 32 ||
      !body.skip(session_len) || !body.u16(suites_len) || suites_len % 2 != 0 || !body.skip(suites_len) ||
      !body.u8(compression_len) || !body.skip(compression_len)) {
    return std::unexpected(HelloError::kMalformed);
  }
  hello.max_version = 0;
  uint16_t extensions_len;
  Reader extensions(std::span<const uint8_t>{});
  if (body.left() > 0 && (!body.u16(extensions_len) || !body.sub(extensions_len, extensions))) {
    return std::unexpected(HelloError::kMalformed);
  }
  while (extensions.left() > 0) {
    uint16_t type, len;
    Reader ext(std::span<const uint8_t>{});
    if (!extensions.u16(type) || !extensions.u16(len) || !extensions.sub(len, ext)) {
      return std::unexpected(HelloError::kMalformed);
    }
    std::expected<void, HelloError> parsed;
    if (type == kExtServerName) parsed = parseSni(ext, hello);
    if (type == kExtAlpn) parsed = parseAlpn(ext, hello);
    if (type == kExtSupportedVersions) parsed = parseSupportedVersions(ext, hello);
    if (!parsed) return std::unexpected(parsed.error());
  }
  if (hello.max_version == 0) hello.max_version = hello.legacy_version;
  return hello;
}

}  // namespace

std::expected<ClientHello, HelloError> parseClientHello(std::span<const uint8_t> stream) {
  if (!stream.empty() && stream[0] != kHandshakeRecord) return std::unexpected(HelloError::kNotHandshake);
  // Concatenate handshake-record fragments until the whole ClientHello message is present.
  std::vector<uint8_t> handshake;
  ClientHello hello{};
  Reader records(stream);
  while (true) {
    if (handshake.size() >= 4) {
      if (handshake[0] != kClientHelloType) return std::unexpected(HelloError::kNotClientHello);
      uint32_t message_len = uint32_t{handshake[1]} << 16 | uint32_t{handshake[2]} << 8 | handshake[3];
      if (message_len > kMaxHandshake) return std::unexpected(HelloError::kMalformed);
      if (handshake.size() >= 4 + message_len) {
        return parseBody(Reader(std::span<const uint8_t>(handshake).subspan(4, message_len)), hello);
      }
    }
    uint8_t type = 0;
    uint16_t version = 0, len = 0;
    if (records.left() < 5) return std::unexpected(HelloError::kNeedMore);
    records.u8(type);
    records.u16(version);
    records.u16(len);
    if (type != kHandshakeRecord || (version >> 8) != 3) return std::unexpected(HelloError::kNotHandshake);
    if (len == 0 || len > (1 << 14)) return std::unexpected(HelloError::kMalformed);
    if (handshake.empty()) hello.record_version = version;
    auto fragment = records.rest().first(std::min<size_t>(len, records.left()));
    handshake.insert(handshake.end(), fragment.begin(), fragment.end());
    records.skip(fragment.size());
  }
}

std::string versionName(uint16_t version) {
  switch (version) {
    case 0x0300: return "SSL3.0";
    case 0x0301: return "TLS1.0";
    case 0x0302: return "TLS1.1";
    case 0x0303: return "TLS1.2";
    case 0x0304: return "TLS1.3";
  }
  return fmt::format("0x{:04x}", version);
}

}  // namespace apiwarden::tls
