// Certificates from TLS 1.2 handshakes (TLS 1.3 encrypts them): the leaf certificate of a
// Certificate message in one direction's handshake flight, and what it says about the machine.
#pragma once

#include "agent/protocols/tls/client_hello.h"

#include <cstdint>
#include <expected>
#include <span>
#include <string>
#include <vector>

namespace apiwarden::tls {

struct CertificateInfo {
  std::string subject;            // RFC 2253: "CN=api.example,O=Example"
  std::string issuer;
  std::vector<std::string> sans;  // "DNS:api.example", "IP:10.0.0.1", "URI:spiffe://..."
  std::string not_after;          // RFC 3339 UTC
  std::string sha256;             // of the DER, lowercase hex
};

// The DER of the first certificate in the first Certificate handshake message of a stream that
// starts with TLS handshake records. kNeedMore until the message is complete; kNotClientHello
// means "no certificate in this flight" (the stream moved on to encrypted records first).
std::expected<std::vector<uint8_t>, HelloError> findLeafCertificate(std::span<const uint8_t> stream);

// Parses a DER certificate. Error when it is not one.
std::expected<CertificateInfo, HelloError> describeCertificate(std::span<const uint8_t> der);

}  // namespace apiwarden::tls
