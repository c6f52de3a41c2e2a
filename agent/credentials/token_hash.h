// The kernel's view of a credential (bpf/progs/credential.bpf.c): a keyed hash of the last word
// of a header value ("Bearer <token>" -> <token>). The agent computes it for each credential it
// sees, so that `apiwardenctl revoke <fingerprint>` can install it; it never leaves the agent
// except as a key of the pinned credential-rule map.
#pragma once

#include "apiwarden/abi.h"

#include <array>
#include <cstdint>
#include <string_view>

namespace apiwarden::credentials {

// 0 when the value has no word.
inline uint64_t tokenHash(const std::array<uint64_t, 2>& key, std::string_view header_value) {
  size_t end = header_value.find_last_not_of(" \t");
  if (end == std::string_view::npos) return 0;
  size_t start = header_value.find_last_of(" \t", end);
  start = start == std::string_view::npos ? 0 : start + 1;
  std::string_view token = header_value.substr(start, end + 1 - start);
  uint64_t h = key[0];
  for (size_t at = 0; at < token.size(); at += 8) {
    uint64_t word = 0;  // little-endian, zero-padded: as the kernel loads it
    for (size_t k = 0; k < 8 && at + k < token.size(); ++k) word |= uint64_t{static_cast<uint8_t>(token[at + k])} << (8 * k);
    h = apiwarden_cred_hash_word(h, word);
  }
  return apiwarden_cred_hash_finish(h, token.size(), key[1]);
}

}  // namespace apiwarden::credentials
