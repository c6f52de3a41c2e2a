#include "agent/credentials/fingerprint.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <fstream>
#include <iterator>

namespace apiwarden::credentials {
namespace {

constexpr size_t kGeneratedKeyBytes = 32;
constexpr size_t kFingerprintBytes = 16;

std::string hex(const uint8_t* data, size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) {
    out.push_back(kDigits[data[i] >> 4]);
    out.push_back(kDigits[data[i] & 0xf]);
  }
  return out;
}

Result<std::vector<uint8_t>> readKey(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(errno, "reading credential key " + path);
  std::vector<uint8_t> key((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!key.empty() && key.back() == '\n') key.pop_back();
  if (key.size() < Fingerprinter::kMinKeyBytes) {
    return fail(EINVAL, "credential key " + path + " is shorter than " +
                            std::to_string(Fingerprinter::kMinKeyBytes) + " bytes");
  }
  return key;
}

// Writes a fresh random key (hex text) readable by root only, atomically.
Result<std::vector<uint8_t>> createKey(const std::string& state_dir, const std::string& path) {
  if (mkdir(state_dir.c_str(), 0700) != 0 && errno != EEXIST) return fail(errno, "creating state dir " + state_dir);
  std::array<uint8_t, kGeneratedKeyBytes> random{};
  if (RAND_bytes(random.data(), static_cast<int>(random.size())) != 1) return fail(EIO, "generating a credential key");
  std::string text = hex(random.data(), random.size()) + "\n";
  wipe(random.data(), random.size());
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fail(errno, "creating " + tmp);
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && fsync(fd) == 0;
  int err = errno;
  ::close(fd);
  wipe(text.data(), text.size());
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    unlink(tmp.c_str());
    return fail(ok ? errno : err, "writing credential key " + path);
  }
  return readKey(path);
}

}  // namespace

void wipe(void* data, size_t size) {
  if (size > 0) explicit_bzero(data, size);
}

Result<Fingerprinter> Fingerprinter::load(const std::string& key_file, const std::string& state_dir) {
  if (!key_file.empty()) {
    auto key = readKey(key_file);
    if (!key) return std::unexpected(key.error());
    return Fingerprinter(std::move(*key));
  }
  std::string path = state_dir + "/credential.key";
  struct stat st {};
  auto key = stat(path.c_str(), &st) == 0 ? readKey(path) : createKey(state_dir, path);
  if (!key) return std::unexpected(key.error());
  return Fingerprinter(std::move(*key));
}

Fingerprinter::Fingerprinter(std::vector<uint8_t> key)
    : key_(std::move(key)), recent_(std::make_unique<Recent[]>(kRecentSecrets)) {
  EVP_MAC* hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  mac_.reset(hmac ? EVP_MAC_CTX_new(hmac) : nullptr);
  EVP_MAC_free(hmac);
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_construct_end()};
  if (mac_ && EVP_MAC_init(mac_.get(), key_.data(), key_.size(), params) != 1) mac_.reset();  // then: one-shot HMAC()
}

void Fingerprinter::MacDeleter::operator()(evp_mac_ctx_st* ctx) const { EVP_MAC_CTX_free(ctx); }

Fingerprinter::~Fingerprinter() {
  wipe(key_.data(), key_.size());
  if (!recent_) return;  // moved from
  for (size_t i = 0; i < kRecentSecrets; ++i) wipe(recent_[i].secret.data(), recent_[i].secret.size());
}

std::string Fingerprinter::fingerprint(std::string_view secret) const {
  Recent& recent = recent_[std::hash<std::string_view>{}(secret) % kRecentSecrets];
  if (!recent.fingerprint.empty() && recent.secret == secret) return recent.fingerprint;
  wipe(recent.secret.data(), recent.secret.size());
  recent.secret.assign(secret);  // may reallocate: the old buffer was wiped above
  recent.fingerprint = compute(secret);
  return recent.fingerprint;
}

std::string Fingerprinter::compute(std::string_view secret) const {
  std::array<uint8_t, EVP_MAX_MD_SIZE> mac{};
  const auto* bytes = reinterpret_cast<const uint8_t*>(secret.data());
  size_t mac_len = 0;
  // A null key re-initialises with the key already set.
  if (!mac_ || EVP_MAC_init(mac_.get(), nullptr, 0, nullptr) != 1 || EVP_MAC_update(mac_.get(), bytes, secret.size()) != 1 ||
      EVP_MAC_final(mac_.get(), mac.data(), &mac_len, mac.size()) != 1) {
    unsigned int len = 0;
    HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()), bytes, secret.size(), mac.data(), &len);
  }
  return hex(mac.data(), kFingerprintBytes);
}

}  // namespace apiwarden::credentials
