#include "agent/protocols/tls/certificate.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

namespace apiwarden::tls {
namespace {

constexpr uint8_t kHandshakeRecord = 22;
constexpr uint8_t kCertificateMessage = 11;
constexpr size_t kMaxRecord = 1 << 14;

uint32_t be(std::span<const uint8_t> b, size_t at, size_t n) {
  uint32_t v = 0;
  for (size_t i = 0; i < n; ++i) v = v << 8 | b[at + i];
  return v;
}

std::string nameOf(X509_NAME* name) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::vector<std::string> sansOf(X509* cert) {
  std::vector<std::string> out;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (!names) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names) && out.size() < 64; ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type == GEN_DNS || name->type == GEN_URI) {
      const ASN1_IA5STRING* s = name->d.ia5;
      out.push_back((name->type == GEN_DNS ? "DNS:" : "URI:") +
                    std::string(reinterpret_cast<const char*>(s->data), static_cast<size_t>(s->length)));
    } else if (name->type == GEN_IPADD && (name->d.ip->length == 4 || name->d.ip->length == 16)) {
      char text[64] = {};
      const uint8_t* ip = name->d.ip->data;
      if (name->d.ip->length == 4) {
        std::snprintf(text, sizeof(text), "%u.%u.%u.%u", ip[0], ip[1], ip[2], ip[3]);
      } else {
        std::string hex;
        for (int k = 0; k < 16; k += 2) hex += fmt::format("{}{:x}", k ? ":" : "", ip[k] << 8 | ip[k + 1]);
        std::snprintf(text, sizeof(text), "%s", hex.c_str());
      }
      out.push_back(std::string("IP:") + text);
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

}  // namespace

std::expected<std::vector<uint8_t>, HelloError> findLeafCertificate(std::span<const uint8_t> stream) {
  std::vector<uint8_t> handshake;  // the handshake bytes of consecutive handshake records
  size_t pos = 0;
  while (true) {
    // Walk the complete handshake messages gathered so far.
    for (size_t at = 0; at + 4 <= handshake.size();) {
      uint32_t length = be(handshake, at + 1, 3);
      if (at + 4 + length > handshake.size()) break;
      if (handshake[at] == kCertificateMessage) {
        std::span<const uint8_t> body(handshake.data() + at + 4, length);
        if (body.size() >= 3 && be(body, 0, 3) == 0) return std::unexpected(HelloError::kNotClientHello);  // none
        if (body.size() < 6) return std::unexpected(HelloError::kMalformed);
        uint32_t list = be(body, 0, 3), first = be(body, 3, 3);
        if (list + 3 > body.size() || first + 6 > body.size() || first == 0) {
          return std::unexpected(HelloError::kMalformed);
        }
        return std::vector<uint8_t>(body.begin() + 6, body.begin() + 6 + first);
      }
      at += 4 + length;
    }
    if (pos + 5 > stream.size()) return std::unexpected(HelloError::kNeedMore);
    if (stream[pos] != kHandshakeRecord) return std::unexpected(HelloError::kNotClientHello);
    uint32_t length = be(stream, pos + 3, 2);
    if (length == 0 || length > kMaxRecord) return std::unexpected(HelloError::kMalformed);
    size_t take = std::min<size_t>(length, stream.size() - pos - 5);
    handshake.insert(handshake.end(), stream.begin() + static_cast<ptrdiff_t>(pos + 5),
                     stream.begin() + static_cast<ptrdiff_t>(pos + 5 + take));
    if (take < length) {
      // A partial record: what it holds may already complete the message.
      pos = stream.size();
      continue;
    }
    pos += 5 + length;
  }
}

std::expected<CertificateInfo, HelloError> describeCertificate(std::span<const uint8_t> der) {
  const uint8_t* p = der.data();
  std::unique_ptr<X509, decltype(&X509_free)> cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())), X509_free);
  if (!cert) return std::unexpected(HelloError::kMalformed);
  CertificateInfo info;
  info.subject = nameOf(X509_get_subject_name(cert.get()));
  info.issuer = nameOf(X509_get_issuer_name(cert.get()));
  info.sans = sansOf(cert.get());
  tm after{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert.get()), &after) == 1) {
    info.not_after = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", after.tm_year + 1900, after.tm_mon + 1,
                                 after.tm_mday, after.tm_hour, after.tm_min, after.tm_sec);
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(der.data(), der.size(), digest, &n, EVP_sha256(), nullptr);
  for (unsigned i = 0; i < n; ++i) info.sha256 += fmt::format("{:02x}", digest[i]);
  return info;
}

}  // namespace apiwarden::tls
