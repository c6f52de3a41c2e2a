// Route templates: request paths with their object ids collapsed, so that baselines and metric
// labels stay bounded. "/users/123/orders/9f1c...?x=1" -> "/users/{id}/orders/{id}".
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>

namespace apiwarden::detect {

struct Route {
  std::string template_;     // "/users/{id}"
  std::string_view last_id;  // the last collapsed segment ("123"), a view into the path; empty if none
};

// Segments that look like object ids become {id}: decimal numbers, UUIDs, hex of 16+ digits, and
// base64/base64url tokens of 20+ characters that mix letters and digits. The query is dropped.
Route routeOf(std::string_view path);
// The same into `out`, reusing its buffer.
void routeOf(std::string_view path, Route& out);

// Caps the distinct templates kept per service; beyond the cap a route is "{other}".
class RouteTable {
 public:
  explicit RouteTable(size_t max_per_service = 512) : max_per_service_(max_per_service) {}
  const std::string& intern(const std::string& service, const std::string& route_template);
  size_t overflowed() const { return overflowed_; }

 private:
  size_t max_per_service_;
  size_t overflowed_ = 0;
  std::string key_;                                      // scratch: service '\0' template
  std::unordered_map<std::string, std::string> routes_;  // key_ -> template
  std::unordered_map<std::string, size_t> per_service_;  // templates kept per service
};

}  // namespace apiwarden::detect
