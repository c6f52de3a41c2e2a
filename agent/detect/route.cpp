#include "agent/detect/route.h"

#include <algorithm>

namespace apiwarden::detect {
namespace {

// ASCII classes inline (the C library's isdigit & co. are calls, and depend on the locale).
bool isDigit(char c) { return c >= '0' && c <= '9'; }
bool isHexDigit(char c) { return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool isAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

bool allOf(std::string_view s, bool (*pred)(char)) { return std::all_of(s.begin(), s.end(), pred); }

bool isUuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !isHexDigit(s[i])) return false;
  }
  return true;
}

bool isToken(std::string_view s) {
  if (s.size() < 20) return false;
  bool digit = false, alpha = false;
  for (char c : s) {
    digit |= isDigit(c);
    alpha |= isAlpha(c);
    if (!isDigit(c) && !isAlpha(c) && c != '-' && c != '_' && c != '+' && c != '=' && c != '.') return false;
  }
  return digit && alpha;
}

bool isObjectId(std::string_view s) {
  if (s.empty()) return false;
  if (allOf(s, isDigit)) return true;
  if (isUuid(s)) return true;
  if (s.size() >= 16 && allOf(s, isHexDigit)) return true;
  return isToken(s);
}

}  // namespace

Route routeOf(std::string_view path) {
  Route route;
  routeOf(path, route);
  return route;
}

void routeOf(std::string_view path, Route& route) {
  // Plain loops: find_first_of("?#") calls memchr once per character, find('/') once per segment.
  path = path.substr(0, std::ranges::find_if(path, [](char c) { return c == '?' || c == '#'; }) - path.begin());
  route.template_.clear();
  route.last_id = {};
  size_t start = 0;
  while (start < path.size()) {
    size_t end = std::find(path.begin() + static_cast<ptrdiff_t>(start), path.end(), '/') - path.begin();
    std::string_view segment = path.substr(start, end - start);
    if (isObjectId(segment)) {
      route.template_.append("{id}");
      route.last_id = segment;
    } else {
      route.template_.append(segment);
    }
    if (end == path.size()) break;
    route.template_.push_back('/');
    start = end + 1;
  }
  if (route.template_.empty()) route.template_ = "/";
}

const std::string& RouteTable::intern(const std::string& service, const std::string& route_template) {
  static const std::string kOther = "{other}";
  key_.assign(service).push_back('\0');
  key_.append(route_template);
  if (auto it = routes_.find(key_); it != routes_.end()) return it->second;
  size_t& count = per_service_[service];
  if (count >= max_per_service_) {
    ++overflowed_;
    return kOther;
  }
  ++count;
  return routes_.emplace(key_, route_template).first->second;
}

}  // namespace apiwarden::detect
