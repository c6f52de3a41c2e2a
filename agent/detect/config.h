// --detect-config: a YAML file that declares who owns which credential and which alerts not to
// report, e.g.
//
//   credentials:
//     - fingerprint: 5f0c...            # or jwt_sub: billing, or jwt_client_id: billing-app
//       owner: spiffe://cluster.local/ns/billing/sa/billing
//   suppressions:
//     - detector: new_endpoint          # any of detector, identity, fingerprint; all given must match
//       identity: cgroup:/batch.slice/report.service
//       until: 2027-01-31T00:00:00Z     # optional: after this the alerts come back
//
// Owners and identities are written as alerts name them (SPIFFE ID, namespace/owner, unit:...,
// cgroup:...). A malformed file is refused at start-up with the line it went wrong on.
#pragma once

#include <string>

#include "agent/detect/engine.h"
#include "apiwarden/common/result.h"

namespace apiwarden::detect {

Result<DetectConfig> loadDetectConfig(const std::string& path);
Result<DetectConfig> parseDetectConfig(const std::string& yaml);

}  // namespace apiwarden::detect
