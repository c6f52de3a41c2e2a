#include "agent/credentials/credential.h"

#include "agent/credentials/token_hash.h"
#include "apiwarden/common/ascii.h"
#include "apiwarden/common/base64.h"

#include <nlohmann/json.hpp>

#include <array>

namespace apiwarden::credentials {
namespace {

constexpr size_t kMaxJwt = 16 * 1024;

bool icontains(std::string_view haystack, std::string_view needle) {
  for (size_t i = 0; i + needle.size() <= haystack.size(); ++i) {
    if (iequals(haystack.substr(i, needle.size()), needle)) return true;
  }
  return false;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string stringClaim(const nlohmann::json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array() && !it->empty() && (*it)[0].is_string()) return (*it)[0].get<std::string>();  // aud
  return {};
}

std::optional<int64_t> timeClaim(const nlohmann::json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || !it->is_number()) return std::nullopt;
  return it->is_number_float() ? static_cast<int64_t>(it->get<double>()) : it->get<int64_t>();
}

// A JSON object from base64url text, without exceptions; a discarded value when it is not one.
nlohmann::json decodeJsonSegment(std::string_view segment) {
  std::string text;
  if (!base64Decode(segment, text)) return nlohmann::json(nlohmann::json::value_t::discarded);
  auto json = nlohmann::json::parse(text, nullptr, false);
  return json.is_object() ? json : nlohmann::json(nlohmann::json::value_t::discarded);
}

constexpr std::array<std::string_view, 8> kSecretParameters = {"api_key", "apikey",   "api-key", "access_token",
                                                               "token",   "password", "secret",  "key"};

bool isSessionCookie(std::string_view name) {
  return icontains(name, "session") || icontains(name, "sid") || icontains(name, "token") || icontains(name, "auth");
}

}  // namespace

std::string_view toString(Scheme scheme) {
  switch (scheme) {
    case Scheme::kNone: return "none";
    case Scheme::kBasic: return "basic";
    case Scheme::kBearer: return "bearer";
    case Scheme::kJwt: return "jwt";
    case Scheme::kApiKey: return "api_key";
    case Scheme::kCookie: return "cookie";
    case Scheme::kMtls: return "mtls";
  }
  return "none";
}

std::optional<JwtClaims> decodeJwt(std::string_view token) {
  size_t dot1 = token.find('.');
  size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (token.size() > kMaxJwt || dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return std::nullopt;
  }
  auto header = decodeJsonSegment(token.substr(0, dot1));
  if (header.is_discarded() || !header.contains("alg")) return std::nullopt;
  auto claims = decodeJsonSegment(token.substr(dot1 + 1, dot2 - dot1 - 1));
  if (claims.is_discarded()) return std::nullopt;
  JwtClaims out;
  out.alg = stringClaim(header, "alg");
  out.kid = stringClaim(header, "kid");
  out.iss = stringClaim(claims, "iss");
  out.sub = stringClaim(claims, "sub");
  out.aud = stringClaim(claims, "aud");
  out.azp = stringClaim(claims, "azp");
  out.client_id = stringClaim(claims, "client_id");
  out.jti = stringClaim(claims, "jti");
  out.iat = timeClaim(claims, "iat");
  out.nbf = timeClaim(claims, "nbf");
  out.exp = timeClaim(claims, "exp");
  return out;
}

bool isSecretParameter(std::string_view name) {
  for (auto known : kSecretParameters) {
    if (iequals(name, known)) return true;
  }
  return false;
}

std::string redactTarget(std::string_view target) {
  size_t query = target.find('?');
  if (query == std::string_view::npos) return std::string(target);
  std::string out(target.substr(0, query + 1));
  std::string_view rest = target.substr(query + 1);
  while (true) {
    size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    size_t eq = pair.find('=');
    if (eq != std::string_view::npos && isSecretParameter(pair.substr(0, eq))) {
      out.append(pair.substr(0, eq + 1)).append("REDACTED");
    } else {
      out.append(pair);
    }
    if (amp == std::string_view::npos) break;
    out.push_back('&');
    rest = rest.substr(amp + 1);
  }
  return out;
}

std::optional<Credential> CredentialExtractor::fromHeader(const http::CredentialHeader& header) const {
  Credential c;
  c.source = "header:" + asciiLower(header.name);
  std::string_view value = trim(header.value);
  if (header.scheme == http::CredentialScheme::kCookie) return fromCookie(value);
  if (token_hash_key_) c.token_hash = tokenHash(*token_hash_key_, value);
  if (header.scheme == http::CredentialScheme::kApiKey && !iequals(header.name, "authorization") &&
      !iequals(header.name, "proxy-authorization")) {
    c.scheme = Scheme::kApiKey;
    c.fingerprint = fingerprinter_.fingerprint(value);
    return c;
  }
  size_t space = value.find(' ');
  std::string_view secret = space == std::string_view::npos ? value : trim(value.substr(space + 1));
  if (secret.empty()) return std::nullopt;
  c.fingerprint = fingerprinter_.fingerprint(secret);
  switch (header.scheme) {
    case http::CredentialScheme::kBasic: {
      c.scheme = Scheme::kBasic;
      std::string decoded;
      if (base64Decode(secret, decoded)) c.basic_user = decoded.substr(0, decoded.find(':'));
      wipe(decoded.data(), decoded.size());
      break;
    }
    case http::CredentialScheme::kBearer:
      c.jwt = decodeJwt(secret);
      c.scheme = c.jwt ? Scheme::kJwt : Scheme::kBearer;
      break;
    default:
      c.scheme = Scheme::kApiKey;  // Authorization with another scheme ("Token", "ApiKey", ...)
      break;
  }
  return c;
}

std::optional<Credential> CredentialExtractor::fromQuery(std::string_view target) const {
  size_t query = target.find('?');
  if (query == std::string_view::npos) return std::nullopt;
  std::string_view rest = target.substr(query + 1);
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    size_t eq = pair.find('=');
    if (eq != std::string_view::npos && eq + 1 < pair.size() && isSecretParameter(pair.substr(0, eq))) {
      Credential c;
      c.scheme = Scheme::kApiKey;
      c.source = "query:" + asciiLower(pair.substr(0, eq));
      c.fingerprint = fingerprinter_.fingerprint(pair.substr(eq + 1));
      return c;
    }
    if (amp == std::string_view::npos) break;
    rest = rest.substr(amp + 1);
  }
  return std::nullopt;
}

std::optional<Credential> CredentialExtractor::fromCookie(std::string_view cookie) const {
  while (!cookie.empty()) {
    size_t semi = cookie.find(';');
    std::string_view pair = trim(cookie.substr(0, semi));
    size_t eq = pair.find('=');
    if (eq != std::string_view::npos && eq + 1 < pair.size() && isSessionCookie(pair.substr(0, eq))) {
      Credential c;
      c.scheme = Scheme::kCookie;
      c.source = "cookie:" + std::string(pair.substr(0, eq));
      c.fingerprint = fingerprinter_.fingerprint(pair.substr(eq + 1));
      return c;
    }
    if (semi == std::string_view::npos) break;
    cookie = cookie.substr(semi + 1);
  }
  return std::nullopt;
}

Credential CredentialExtractor::extract(const http::RequestHead& head) const {
  // Rank: Authorization (0), API-key headers (1), Proxy-Authorization (2); cookies come last.
  auto rank = [](const http::CredentialHeader& h) {
    if (iequals(h.name, "authorization")) return 0;
    if (iequals(h.name, "proxy-authorization")) return 2;
    return h.scheme == http::CredentialScheme::kCookie ? 4 : 1;
  };
  const http::CredentialHeader* best = nullptr;
  for (const auto& header : head.credentials) {
    if (rank(header) < 4 && (!best || rank(header) < rank(*best))) best = &header;
  }
  if (best) {
    if (auto c = fromHeader(*best)) return *c;
  }
  if (auto c = fromQuery(head.target)) return *c;
  for (const auto& header : head.credentials) {
    if (header.scheme != http::CredentialScheme::kCookie) continue;
    if (auto c = fromCookie(header.value)) return *c;
  }
  return {};
}

Credential CredentialExtractor::fromClientCertificate(std::string_view sha256_hex) const {
  Credential credential;
  credential.scheme = Scheme::kMtls;
  credential.fingerprint = fingerprinter_.fingerprint(sha256_hex);
  credential.source = "tls:client_certificate";
  return credential;
}

}  // namespace apiwarden::credentials
