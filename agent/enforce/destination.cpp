#include "agent/enforce/destination.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace apiwarden::enforce {
namespace {

Result<uint16_t> parsePort(std::string_view text, std::string_view whole) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535) {
    return fail(EINVAL, "malformed destination '" + std::string(whole) + "': port must be 1-65535");
  }
  return static_cast<uint16_t>(value);
}

}  // namespace

Result<Destination> parseDestination(std::string_view whole) {
  std::string_view text = whole;
  std::string_view port_text;
  if (text.starts_with('[')) {  // [v6 or v6/len]:port
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 == text.size() || text[close + 1] != ':') {
      return fail(EINVAL, "malformed destination '" + std::string(whole) + "': expected [address]:port");
    }
    port_text = text.substr(close + 2);
    text = text.substr(1, close - 1);
  } else if (std::count(text.begin(), text.end(), ':') == 1) {  // v4:port
    size_t colon = text.find(':');
    port_text = text.substr(colon + 1);
    text = text.substr(0, colon);
  }
  Destination d;
  if (!port_text.empty()) {
    auto port = parsePort(port_text, whole);
    if (!port) return std::unexpected(port.error());
    d.port = *port;
  }
  std::string address(text.substr(0, text.find('/')));
  bool v4 = address.find(':') == std::string::npos;
  int max_bits = v4 ? 32 : 128;
  int bits = max_bits;
  if (size_t slash = text.find('/'); slash != std::string_view::npos) {
    std::string_view len = text.substr(slash + 1);
    auto [end, ec] = std::from_chars(len.data(), len.data() + len.size(), bits);
    if (ec != std::errc() || end != len.data() + len.size() || bits < 0 || bits > max_bits) {
      return fail(EINVAL, "malformed destination '" + std::string(whole) + "': prefix length must be 0-" +
                              std::to_string(max_bits));
    }
  }
  if (v4) {
    in_addr a{};
    if (inet_pton(AF_INET, address.c_str(), &a) != 1) {
      return fail(EINVAL, "malformed destination '" + std::string(whole) + "': not an IPv4 or IPv6 address");
    }
    d.addr[10] = d.addr[11] = 0xff;
    std::memcpy(d.addr.data() + 12, &a, 4);
    d.prefix = 96 + bits;
  } else {
    if (inet_pton(AF_INET6, address.c_str(), d.addr.data()) != 1) {
      return fail(EINVAL, "malformed destination '" + std::string(whole) + "': not an IPv4 or IPv6 address");
    }
    d.prefix = bits;
  }
  for (int bit = d.prefix; bit < 128; ++bit) d.addr[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));

  char buffer[INET6_ADDRSTRLEN] = {};
  std::string shown = v4 ? inet_ntop(AF_INET, d.addr.data() + 12, buffer, sizeof(buffer))
                         : inet_ntop(AF_INET6, d.addr.data(), buffer, sizeof(buffer));
  if (bits != max_bits) shown += "/" + std::to_string(bits);
  if (d.port != 0) shown = (v4 ? shown : "[" + shown + "]") + ":" + std::to_string(d.port);
  d.text = shown;
  return d;
}

bool covers(const Destination& a, const Destination& b) {
  if (a.prefix > b.prefix) return false;
  for (int bit = 0; bit < a.prefix; ++bit) {
    uint8_t mask = static_cast<uint8_t>(0x80u >> (bit % 8));
    if ((a.addr[bit / 8] & mask) != (b.addr[bit / 8] & mask)) return false;
  }
  return true;
}

}  // namespace apiwarden::enforce
