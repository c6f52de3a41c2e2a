#include "agent/detect/alert.h"

#include "agent/export/json_lines.h"

namespace apiwarden::detect {

std::string_view toString(Severity severity) {
  switch (severity) {
    case Severity::kLow:
      return "low";
    case Severity::kMedium:
      return "medium";
    case Severity::kHigh:
      return "high";
    case Severity::kCritical:
      return "critical";
  }
  return "unknown";
}

Result<std::unique_ptr<AlertLog>> AlertLog::open(const std::string& path, uint64_t window_ns) {
  if (path == "-") return std::unique_ptr<AlertLog>(new AlertLog(stdout, false, window_ns));
  FILE* file = std::fopen(path.c_str(), "ae");
  if (!file) return fail(errno, "opening " + path);
  return std::unique_ptr<AlertLog>(new AlertLog(file, true, window_ns));
}

AlertLog::~AlertLog() {
  flush();
  if (owned_) std::fclose(file_);
}

void AlertLog::flush() { std::fflush(file_); }

nlohmann::json workloadJson(const records::Workload& w) { return nlohmann::json::parse(records::workloadToJson(w)); }

void AlertLog::forgetOlderThan(uint64_t ts_ns) {
  std::erase_if(seen_, [ts_ns](const auto& entry) { return entry.second.last_seen < ts_ns; });
}

void AlertLog::raise(const Alert& alert) {
  ++raised_;
  if (seen_.size() > 65536) forgetOlderThan(alert.ts_ns > window_ns_ ? alert.ts_ns - window_ns_ : 0);
  Seen& seen = seen_[alert.dedupe_key];
  if (seen.count == 0) seen.first_seen = alert.ts_ns;
  seen.last_seen = alert.ts_ns;
  ++seen.count;
  if (seen.last_written != 0 && alert.ts_ns < seen.last_written + window_ns_) return;
  seen.last_written = alert.ts_ns;

  nlohmann::ordered_json line = {
      {"ts", records::formatTimestamp(alert.ts_ns)},
      {"detector", alert.detector},
      {"severity", toString(alert.severity)},
      {"summary", alert.summary},
  };
  if (alert.workload) line["workload"] = workloadJson(*alert.workload);
  if (!alert.identity.empty()) line["identity"] = alert.identity;
  if (!alert.fingerprint.empty()) {
    line["credential"] = {{"scheme", credentials::toString(alert.scheme)}, {"fingerprint", alert.fingerprint}};
  }
  line["evidence"] = alert.evidence;
  line["dedupe_key"] = alert.dedupe_key;
  line["first_seen"] = records::formatTimestamp(seen.first_seen);
  line["last_seen"] = records::formatTimestamp(seen.last_seen);
  line["count"] = seen.count;
  write(line);
  if (observer_) observer_(alert);
}

void AlertLog::write(const nlohmann::ordered_json& record) {
  std::string text = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  text.push_back('\n');
  if (std::fwrite(text.data(), 1, text.size(), file_) != text.size()) {
    ++write_errors_;
    return;
  }
  ++written_;
  flush();  // alerts are rare and wanted now
}

}  // namespace apiwarden::detect
