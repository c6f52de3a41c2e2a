// Route templates: request paths with their object ids collapsed, so that baselines and metric
// labels stay bounded. "/users/123/orders/9f1c...?x=1" -> "/users/{id}/orders/{id}".
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace apiwarden::detect {

struct Route {
  std::string template_;  // "/users/{id}"
  std::string last_id;    // the value of the last collapsed segment ("123"); empty if none
};

// Segments that look like object ids become {id}: decimal numbers, UUIDs, hex of 16+ digits, and
// base64/base64url tokens of 20+ characters that mix letters and digits. The query is dropped.
Route routeOf(std::string_view path);

// Caps the distinct templates kept per service; beyond the cap a route is "{other}".
class RouteTable {
 public:
  explicit RouteTable(size_t max_per_service = 512) : max_per_service_(max_per_service) {}
  const std::string& intern(const std::string& service, const std::string& route_template);
  size_t overflowed() const { return overflowed_; }

 private:
  size_t max_per_service_;
  size_t overflowed_ = 0;
  std::unordered_map<std::string, std::unordered_set<std::string>> routes_;
};

}  // namespace apiwarden::detect
