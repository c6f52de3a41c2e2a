// Alerts: what a detector raises, and the JSON Lines log that writes them. Each alert has a dedupe
// key; repeats of a key within the window are counted, not written again, and the next one after
// the window is written with the count so far, so a persistent problem neither floods nor vanishes.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>

#include "agent/credentials/credential.h"
#include "agent/export/record.h"
#include "apiwarden/common/result.h"

namespace apiwarden::detect {

enum class Severity : uint8_t { kLow, kMedium, kHigh, kCritical };
std::string_view toString(Severity severity);

struct Alert {
  std::string detector;  // stable id: "shared_credential", ...
  Severity severity = Severity::kMedium;
  std::string summary;                        // one line a SOC analyst can act on
  std::optional<records::Workload> workload;  // the workload the alert is about, when it is one
  std::string identity;                       // its identity key (SPIFFE ID, owner, unit, cgroup)
  credentials::Scheme scheme = credentials::Scheme::kNone;
  std::string fingerprint;  // the credential's keyed fingerprint; never the secret
  nlohmann::json evidence = nlohmann::json::object();
  std::string dedupe_key;
  uint64_t ts_ns = 0;  // wall clock of the record that tripped it
};

class AlertLog {
 public:
  // path "-" is stdout. window_ns: repeats of a dedupe key within it are counted, not written.
  static Result<std::unique_ptr<AlertLog>> open(const std::string& path, uint64_t window_ns);
  ~AlertLog();
  AlertLog(const AlertLog&) = delete;
  AlertLog& operator=(const AlertLog&) = delete;

  void raise(const Alert& alert);
  // Called with each alert as it is written (not for repeats counted within the window).
  void onWrite(std::function<void(const Alert&)> observer) { observer_ = std::move(observer); }
  // Writes one record as it is, at once, never deduplicated: audit records of enforcement actions.
  void write(const nlohmann::ordered_json& record);
  void flush();
  uint64_t raised() const { return raised_; }
  uint64_t written() const { return written_; }
  uint64_t writeErrors() const { return write_errors_; }

 private:
  AlertLog(FILE* file, bool owned, uint64_t window_ns) : file_(file), owned_(owned), window_ns_(window_ns) {}
  struct Seen {
    uint64_t first_seen = 0, last_seen = 0, last_written = 0, count = 0;
  };
  void forgetOlderThan(uint64_t ts_ns);

  FILE* file_;
  bool owned_;
  uint64_t window_ns_;
  std::unordered_map<std::string, Seen> seen_;
  uint64_t raised_ = 0, written_ = 0, write_errors_ = 0;
  std::function<void(const Alert&)> observer_;
};

// JSON of a workload's identity for alerts (the record schema's workload object).
nlohmann::json workloadJson(const records::Workload& workload);

}  // namespace apiwarden::detect
