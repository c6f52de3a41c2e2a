// Auto-response policies (--enforce-config, off unless given): an alert of a detector at or above
// a severity triggers an enforcement action for a while, e.g.
//
//   responses:
//     - detector: shared_credential   # a detector id (see README)
//       min_severity: high            # low, medium, high, critical (default: high)
//       action: revoke                # revoke: the alert's credential; cut: the alert's workload (egress)
//       ttl: 15m                      # s, m, h, d (default: the agent's --enforce-default-ttl)
//
// The action is an ordinary rule: audited (actor "apiwarden-agent (auto-response)"), listed,
// restorable, and in monitor mode only counted. A malformed file is refused at start-up.
#pragma once

#include "agent/detect/alert.h"
#include "apiwarden/common/result.h"

#include <cstdint>
#include <string>
#include <vector>

namespace apiwarden::enforce {

struct ResponsePolicy {
  std::string detector;
  detect::Severity min_severity = detect::Severity::kHigh;
  std::string action;  // "cut" or "revoke"
  uint64_t ttl_s = 0;  // 0: the default
};

Result<std::vector<ResponsePolicy>> parseResponses(const std::string& yaml);
Result<std::vector<ResponsePolicy>> loadResponses(const std::string& path);

}  // namespace apiwarden::enforce
