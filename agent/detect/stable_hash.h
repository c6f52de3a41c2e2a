// The detectors' keys as 64-bit hashes that mean the same in every build and on every machine, so
// that a saved baseline can be read back (std::hash promises neither). Eight bytes a step, the
// words assembled little-endian whatever the host, mixed with the splitmix64 finalizer.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace apiwarden::detect {

inline uint64_t stableMix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

inline uint64_t stableHash(std::string_view text) {
  uint64_t hash = 0x9e3779b97f4a7c15ULL ^ text.size();
  size_t i = 0;
  auto word = [&](size_t n) {
    uint64_t w = 0;
    if constexpr (std::endian::native == std::endian::little) {
      std::memcpy(&w, text.data() + i, n);  // one load: the bytes already are in little-endian order
    } else {
      for (size_t b = 0; b < n; ++b) w |= uint64_t{static_cast<uint8_t>(text[i + b])} << (8 * b);
    }
    return w;
  };
  for (; i + 8 <= text.size(); i += 8) hash = stableMix(hash ^ word(8));
  if (i < text.size()) hash = stableMix(hash ^ word(text.size() - i));
  return stableMix(hash);
}

}  // namespace apiwarden::detect
