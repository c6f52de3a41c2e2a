// The behavioural detectors: object-id enumeration, bursts of authorization failures, and routes or
// destinations a caller never used during its learning period.
#include <algorithm>
#include <charconv>
#include <span>
#include <vector>

#include "agent/detect/engine.h"

namespace apiwarden::detect {
namespace {

constexpr uint64_t kNsPerSecond = 1'000'000'000ULL;

bool denied(const records::HttpRecord& record) {
  return record.status && (*record.status == 401 || *record.status == 403 || *record.status == 404);
}

int64_t decimalValue(std::string_view id) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(id.data(), id.data() + id.size(), value);
  return ec == std::errc() && end == id.data() + id.size() && value >= 0 ? value : -1;
}

// Share of the ids that are the previous id + 1, among numeric ids in arrival order.
template <typename Uses>
double sequentialShare(const Uses& seen) {
  size_t sequential = 0, pairs = 0;
  int64_t previous = -1;
  for (const auto& use : seen) {
    if (use.number >= 0 && previous >= 0) {
      ++pairs;
      sequential += use.number == previous + 1;
    }
    previous = use.number;
  }
  return pairs ? static_cast<double>(sequential) / static_cast<double>(pairs) : 0.0;
}

// Routes whose misuse is worse: administrative paths, and writes.
bool adminLike(const std::string& method, const std::string& route) {
  for (const char* word : {"admin", "internal", "debug", "actuator", "manage"}) {
    if (route.find(word) != std::string::npos) return true;
  }
  return method == "DELETE" || method == "PUT" || method == "PATCH";
}

}  // namespace

void DetectionEngine::objectEnumeration(const Call& call) {
  const records::HttpRecord& record = *call.record;
  if (!call.primary || !call.caller || call.last_id.empty()) return;
  uint64_t window_key = stableHash(key({*call.caller->identity, *call.service, record.method, *call.route}));
  auto it = id_windows_.find(window_key);
  if (it == id_windows_.end()) {
    if (id_windows_.size() >= options_.max_keys) return;
    it = id_windows_.try_emplace(window_key).first;
  }
  IdWindow& window = it->second;
  uint64_t now = record.ts_ns;
  std::vector<IdUse>& seen = window.seen;
  for (; window.oldest < seen.size() && seen[window.oldest].ts_ns + options_.burst_window_ns < now; ++window.oldest) {
    window.ids.remove(seen[window.oldest].id_hash);
    window.denied -= seen[window.oldest].denied;
  }
  if (2 * window.oldest >= seen.size()) {  // the expired entries are half: drop them
    seen.erase(seen.begin(), seen.begin() + static_cast<ptrdiff_t>(window.oldest));
    window.oldest = 0;
  }
  if (seen.size() - window.oldest >= 4 * options_.enumeration_threshold + 1024) return;  // bounded; already alerting
  seen.push_back({now, stableHash(call.last_id), decimalValue(call.last_id), denied(record)});
  window.ids.add(seen.back().id_hash);
  window.denied += seen.back().denied;
  window.recent[window.recent_next++ % window.recent.size()].assign(call.last_id);

  size_t distinct = window.ids.distinct();
  if (learning(now)) {
    window.learned_max = std::max(window.learned_max, distinct);
    return;
  }
  // A caller that walked this many ids while learning does so normally: hold it to twice that.
  size_t threshold = std::max(options_.enumeration_threshold, 2 * window.learned_max);
  if (distinct < threshold) return;

  auto in_window = std::span(seen).subspan(window.oldest);
  double sequential = sequentialShare(in_window);
  double denied_share = static_cast<double>(window.denied) / static_cast<double>(in_window.size());
  Alert alert = alertFor(call, "object_enumeration",
                         sequential > 0.5 || denied_share > 0.5 ? Severity::kHigh : Severity::kMedium);
  alert.summary = *call.caller->identity + " touched " + std::to_string(distinct) + " distinct ids on " +
                  record.method + " " + *call.route + " of " + *call.service + " within " +
                  std::to_string(options_.burst_window_ns / kNsPerSecond) + " s";
  std::vector<std::string> examples;  // oldest first
  for (size_t i = 0; i < window.recent.size(); ++i) {
    const std::string& id = window.recent[(window.recent_next + i) % window.recent.size()];
    if (!id.empty()) examples.push_back(id);
  }
  alert.evidence = {{"service", *call.service},     {"method", record.method}, {"route", *call.route},
                    {"distinct_ids", distinct},     {"threshold", threshold},  {"sequential_share", sequential},
                    {"denied_share", denied_share}, {"last_ids", examples}};
  alert.dedupe_key =
      "object_enumeration/" + *call.caller->identity + " " + *call.service + " " + record.method + " " + *call.route;
  raise(std::move(alert));
}

void DetectionEngine::authFailureBurst(const Call& call, CallerState* caller) {
  const records::HttpRecord& record = *call.record;
  if (!caller || !record.status || (*record.status != 401 && *record.status != 403)) return;
  std::deque<uint64_t>& at = caller->failures.at;
  uint64_t now = record.ts_ns;
  while (!at.empty() && at.front() + options_.burst_window_ns < now) at.pop_front();
  if (at.size() < 4 * options_.auth_failure_threshold) at.push_back(now);
  if (at.size() < options_.auth_failure_threshold) return;

  Alert alert = alertFor(call, "auth_failure_burst", Severity::kHigh);
  alert.summary = *call.caller->identity + " got " + std::to_string(at.size()) +
                  " authorization failures (401/403) within " +
                  std::to_string(options_.burst_window_ns / kNsPerSecond) +
                  " s: credential stuffing, or a revoked secret still in use";
  alert.evidence = {
      {"failures", at.size()},
      {"last",
       {{"service", *call.service}, {"method", record.method}, {"route", *call.route}, {"status", *record.status}}}};
  alert.dedupe_key = "auth_failure_burst/" + *call.caller->identity;
  raise(std::move(alert));
}

void DetectionEngine::newEndpointOrPeer(const Call& call, CallerState* caller, CredentialUse* credential) {
  const records::HttpRecord& record = *call.record;
  if (!caller) return;
  uint64_t now = record.ts_ns;
  constexpr size_t kMaxPerKey = 4096;
  uint64_t peer = call.service_key;
  auto first = [&](std::unordered_set<uint64_t>& known, uint64_t item) {
    return known.size() < kMaxPerKey && known.insert(item).second;
  };

  // Every caller, and every credential, learns for the learning period from when it is first seen,
  // and not before the agent's own learning period is over.
  CallerBaseline& baseline = caller->baseline;
  bool caller_learned = !learning(now) && baseline.first_seen + options_.learning_ns <= now;
  bool new_peer = first(baseline.peers, peer) && caller_learned;
  bool new_endpoint = first(baseline.endpoints, call.endpoint) && caller_learned;
  // A credential used where it never was, by a caller that has been there (a token borrowed by a
  // workload for another purpose): reported as such, once.
  bool credential_learned = credential && !learning(now) && credential->first_seen + options_.learning_ns <= now;
  bool credential_peer = credential && first(credential->peers, peer) && credential_learned;
  bool credential_endpoint = credential && first(credential->endpoints, call.endpoint) && credential_learned;

  bool credential_only = !new_peer && !new_endpoint && (credential_peer || credential_endpoint);
  if (credential_only) {
    new_peer = credential_peer;
    new_endpoint = credential_endpoint;
  }
  if (!new_peer && !new_endpoint) return;  // the common case: nothing new, no string built
  std::string subject = *call.caller->identity;
  std::string dedupe = subject;
  if (credential_only) {
    subject =
        credentialLabel(record.credential.scheme, record.credential.fingerprint) + " (" + *call.caller->identity + ")";
    dedupe = "credential:" + record.credential.fingerprint;
  }
  if (new_peer) {
    Alert alert = alertFor(call, "new_peer", Severity::kMedium);
    alert.summary = subject + " called " + *call.service + " for the first time";
    alert.evidence = {{"service", *call.service},
                      {"known_peers", baseline.peers.size() - 1},
                      {"first_call", {{"method", record.method}, {"route", *call.route}}}};
    if (record.status) alert.evidence["first_call"]["status"] = *record.status;
    alert.dedupe_key = "new_peer/" + dedupe + "/" + *call.service;
    raise(std::move(alert));
  }
  if (new_endpoint) {
    bool admin = adminLike(record.method, *call.route);
    Alert alert = alertFor(call, "new_endpoint", admin ? Severity::kHigh : Severity::kLow);
    alert.summary = subject + " used " + record.method + " " + *call.route + " of " + *call.service +
                    " for the first time" + (admin ? " (administrative or write access)" : "");
    alert.evidence = {{"service", *call.service},
                      {"method", record.method},
                      {"route", *call.route},
                      {"admin_like", admin},
                      {"known_endpoints", baseline.endpoints.size() - 1}};
    if (record.status) alert.evidence["status"] = *record.status;
    alert.dedupe_key = "new_endpoint/" + dedupe + "/" + key({*call.service, record.method, *call.route});
    raise(std::move(alert));
  }
}

}  // namespace apiwarden::detect
