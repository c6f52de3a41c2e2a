// The detectors' baseline on disk: <state-dir>/baseline.pb, a protobuf StateFile written
// atomically (temporary file, fsync, rename, fsync of the directory), read back at start-up.
// A corrupt or foreign file is reported and set aside (renamed *.rejected-<unix time>), never
// trusted and never fatal: the agent learns afresh.
#pragma once

#include <string>

#include "agent/detect/engine.h"
#include "apiwarden/common/result.h"

namespace apiwarden::detect {

constexpr uint32_t kBaselineVersion = 1;

enum class LoadOutcome { kFresh, kLoaded, kSetAside };

struct LoadResult {
  LoadOutcome outcome = LoadOutcome::kFresh;
  std::string detail;  // why a file was set aside, and where it went
};

// Fails only when the file can neither be read nor set aside.
Result<LoadResult> loadBaseline(const std::string& path, DetectionEngine& engine);
Result<void> saveBaseline(const std::string& path, const DetectionEngine& engine);

}  // namespace apiwarden::detect
