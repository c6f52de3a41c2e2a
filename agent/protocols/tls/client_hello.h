// TLS ClientHello parsing: SNI, ALPN and versions from the first bytes a TLS client sends.
#pragma once

#include <cstdint>
#include <expected>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace apiwarden::tls {

struct ClientHello {
  std::string sni;                // server_name host_name, empty if absent
  std::vector<std::string> alpn;  // application_layer_protocol_negotiation, in offered order
  uint16_t record_version;        // TLSPlaintext.legacy_record_version
  uint16_t legacy_version;        // ClientHello.legacy_version
  uint16_t max_version;           // highest of supported_versions, else legacy_version
};

enum class HelloError : uint8_t {
  kNeedMore,         // a valid prefix: call again with more bytes
  kNotHandshake,     // the stream does not start with a TLS handshake record
  kNotClientHello,   // first handshake message is not a ClientHello
  kMalformed,        // lengths inconsistent or out of bounds
};

// Parses the ClientHello at the start of a client's stream. The handshake message may span
// several TLS records. Bounded: never reads outside `stream`, never allocates from wire lengths
// beyond the input size, caps SNI at 255 bytes and ALPN at 16 entries.
std::expected<ClientHello, HelloError> parseClientHello(std::span<const uint8_t> stream);

// "TLS1.0".."TLS1.3", "SSL3.0", or "0x%04x" for anything else.
std::string versionName(uint16_t version);

}  // namespace apiwarden::tls
