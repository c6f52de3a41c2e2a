// What credential a request carries, reduced at once to a keyed fingerprint and the harmless
// facts around it (scheme, where it was, a Basic user name, a JWT's claims). The secret bytes are
// read in place from the parser's buffer and never copied out.
#pragma once

#include "agent/credentials/fingerprint.h"
#include "agent/protocols/http/parser.h"

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace apiwarden::credentials {

enum class Scheme : uint8_t { kNone, kBasic, kBearer, kJwt, kApiKey, kCookie, kMtls };
std::string_view toString(Scheme scheme);  // "none", "basic", "bearer", "jwt", "api_key", "cookie", "mtls"

// A JWT's header and claims, decoded but not verified. Absent values stay empty.
struct JwtClaims {
  std::string alg, kid, iss, sub, aud, azp, client_id, jti;
  std::optional<int64_t> iat, nbf, exp;
};

struct Credential {
  Scheme scheme = Scheme::kNone;
  std::string fingerprint;  // 32 hex chars; empty when there is none
  std::string source;       // "header:authorization", "query:api_key", "cookie:sessionid"
  std::string basic_user;   // Basic auth user name (never the password)
  std::optional<JwtClaims> jwt;
  uint64_t token_hash = 0;  // the kernel's keyed hash of a header token (token_hash.h); 0: none. Never written out
};

class CredentialExtractor {
 public:
  explicit CredentialExtractor(const Fingerprinter& fingerprinter) : fingerprinter_(fingerprinter) {}
  // With enforcement on: header credentials also get the kernel's token hash under this key.
  void setTokenHashKey(const std::array<uint64_t, 2>& key) { token_hash_key_ = key; }

  // The strongest credential of a request: Authorization, then API-key headers, then
  // Proxy-Authorization, then a credential query parameter, then a session cookie.
  Credential extract(const http::RequestHead& head) const;
  // Mutual TLS: the client certificate (by its SHA-256, hex) as the credential.
  Credential fromClientCertificate(std::string_view sha256_hex) const;

 private:
  std::optional<Credential> fromHeader(const http::CredentialHeader& header) const;
  std::optional<Credential> fromQuery(std::string_view target) const;
  std::optional<Credential> fromCookie(std::string_view cookie) const;

  const Fingerprinter& fingerprinter_;
  std::optional<std::array<uint64_t, 2>> token_hash_key_;
};

// Query parameters that carry secrets (api_key, access_token, token, ...), case-insensitive.
bool isSecretParameter(std::string_view name);
// The request target with every secret parameter's value replaced by "REDACTED".
std::string redactTarget(std::string_view target);

// Decodes a JWT's header and payload (base64url JSON) without verifying it; nullopt if the token
// is not a JWT. Bounded: tokens over 16 KiB are not decoded.
std::optional<JwtClaims> decodeJwt(std::string_view token);

}  // namespace apiwarden::credentials
