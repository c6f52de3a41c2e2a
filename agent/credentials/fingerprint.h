// Keyed fingerprints of credentials: HMAC-SHA256 under a cluster-wide key, truncated to 128 bits.
// The same secret gives the same fingerprint on every node that shares the key; without the key a
// fingerprint cannot be tested against guesses, and no plain hash of a secret is ever emitted.
#pragma once

#include "apiwarden/common/result.h"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct evp_mac_ctx_st;

namespace apiwarden::credentials {

class Fingerprinter {
 public:
  static constexpr size_t kMinKeyBytes = 16;

  // key_file: the cluster key (e.g. a mounted Kubernetes Secret), used byte for byte minus one
  // trailing newline. Empty: <state_dir>/credential.key, created with 32 random bytes if absent.
  static Result<Fingerprinter> load(const std::string& key_file, const std::string& state_dir);
  explicit Fingerprinter(std::vector<uint8_t> key);
  Fingerprinter(Fingerprinter&&) = default;
  ~Fingerprinter();

  // 32 lowercase hex characters. Not thread-safe: one Fingerprinter per thread.
  std::string fingerprint(std::string_view secret) const;

  static constexpr size_t kRecentSecrets = 64;

 private:
  struct MacDeleter {
    void operator()(evp_mac_ctx_st* ctx) const;
  };

  std::string compute(std::string_view secret) const;

  std::vector<uint8_t> key_;
  // HMAC keyed once (OpenSSL keeps the padded key's hash state): each fingerprint re-initialises
  // it instead of fetching the algorithm and hashing the key again.
  std::unique_ptr<evp_mac_ctx_st, MacDeleter> mac_;
  // The last secrets seen and their fingerprints, by a hash of the secret: a keep-alive client
  // sends the same token with every request, and the HMAC is most of what a request costs. The
  // secrets stay in this memory only; an entry is wiped when it is replaced, and all at the end.
  struct Recent {
    std::string secret;
    std::string fingerprint;
  };
  mutable std::unique_ptr<Recent[]> recent_;
};

// Overwrites memory that held secret bytes; the compiler may not drop it.
void wipe(void* data, size_t size);

}  // namespace apiwarden::credentials
