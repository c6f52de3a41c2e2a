// 64-bit FNV-1a: the detectors' keys as hashes that mean the same in every build and on every
// machine, so that a saved baseline can be read back (std::hash promises neither).
#pragma once

#include <cstdint>
#include <string_view>

namespace apiwarden::detect {

constexpr uint64_t stableHash(std::string_view text) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (char c : text) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

}  // namespace apiwarden::detect
