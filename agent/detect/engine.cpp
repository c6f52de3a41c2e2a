#include "agent/detect/engine.h"

#include <vector>

#include "agent/export/json_lines.h"

namespace apiwarden::detect {
namespace {

using records::Direction;
using records::HttpRecord;

constexpr uint64_t kNsPerSecond = 1'000'000'000ULL;

bool success(const HttpRecord& record) { return record.status && *record.status >= 200 && *record.status < 300; }

std::string shortFingerprint(const std::string& fingerprint) { return fingerprint.substr(0, 8); }

std::optional<Caller> callerOf(const HttpRecord& record) {
  const records::FlowInfo& flow = *record.flow;
  if (flow.direction == Direction::kClient) return Caller{identityOf(flow.workload), flow.workload};
  if (flow.peer.workload) return Caller{identityOf(*flow.peer.workload), flow.peer.workload};
  if (flow.peer.scope == "node") return std::nullopt;  // a local caller not (yet) named: do not guess
  return Caller{"ip:" + flow.remote.ip, std::nullopt};
}

}  // namespace

std::string identityOf(const records::Workload& w) {
  if (!w.spiffe_id.empty()) return w.spiffe_id;
  if (!w.ns.empty() && !w.owner.empty()) return w.ns + "/" + w.owner;
  if (!w.ns.empty() && !w.pod.empty()) return w.ns + "/pod/" + w.pod;
  if (!w.systemd_unit.empty()) return "unit:" + w.systemd_unit;
  if (w.cgroup_path) return "cgroup:" + *w.cgroup_path;
  return "cgroup-id:" + std::to_string(w.cgroup_id);
}

DetectionEngine::DetectionEngine(records::RecordSink& next, AlertLog& alerts, DetectOptions options)
    : next_(next), alerts_(alerts), options_(options), routes_(options.max_routes_per_service) {}

Call DetectionEngine::describe(const HttpRecord& record) {
  const records::FlowInfo& flow = *record.flow;
  Call call;
  call.record = &record;
  call.caller = callerOf(record);
  bool server = flow.direction == Direction::kServer;
  if (server) {
    call.service = identityOf(flow.workload);
  } else if (flow.peer.workload) {
    call.service = identityOf(*flow.peer.workload);
  } else {
    call.service = "ip:" + flow.remote.ip + ":" + std::to_string(flow.remote.port);
  }
  call.route = routeOf(record.path);
  call.route.template_ = routes_.intern(call.service, call.route.template_);
  call.primary = server || !flow.peer.workload;
  return call;
}

void DetectionEngine::write(const HttpRecord& record) {
  if (stats_.records++ == 0) started_ns_ = record.ts_ns;
  Call call = describe(record);
  sharedCredential(call);
  staleCredential(call);
  unauthenticatedAccess(call);
  objectEnumeration(call);
  authFailureBurst(call);
  newEndpointOrPeer(call);
  spikes(call);
  responseVolume(call);
  next_.write(record);
}

Alert DetectionEngine::alertFor(const Call& call, std::string detector, Severity severity) {
  Alert alert;
  alert.detector = std::move(detector);
  alert.severity = severity;
  if (call.caller) {
    alert.workload = call.caller->workload;
    alert.identity = call.caller->identity;
  }
  alert.scheme = call.record->credential.scheme;
  alert.fingerprint = call.record->credential.fingerprint;
  alert.ts_ns = call.record->ts_ns;
  return alert;
}

void DetectionEngine::raise(Alert alert) {
  ++stats_.alerts;
  alerts_.raise(alert);
}

void DetectionEngine::sharedCredential(const Call& call) {
  const HttpRecord& record = *call.record;
  const credentials::Credential& credential = record.credential;
  if (credential.fingerprint.empty() || !call.caller) return;
  std::optional<Caller> caller = call.caller;
  auto it = credentials_.find(credential.fingerprint);
  if (it == credentials_.end()) {
    if (credentials_.size() >= options_.max_credentials) {
      ++stats_.credentials_dropped;
      return;
    }
    it = credentials_.emplace(credential.fingerprint, CredentialUse{credential.scheme, {}}).first;
  }
  CredentialUse& use = it->second;
  uint64_t now = record.ts_ns;
  std::erase_if(use.presenters,
                [&](const auto& entry) { return entry.second.last_seen + options_.shared_window_ns < now; });
  auto [slot, added] = use.presenters.try_emplace(caller->identity);
  Presenter& p = slot->second;
  if (added) {
    p.workload = std::move(caller->workload);
    p.first_seen = now;
  }
  p.last_seen = now;
  ++p.records;
  if (use.presenters.size() < 2) return;

  Alert alert;
  alert.detector = "shared_credential";
  alert.severity = Severity::kHigh;
  std::string names;
  nlohmann::json presenters = nlohmann::json::array();
  for (const auto& [identity, seen] : use.presenters) {
    names += (names.empty() ? "" : ", ") + identity;
    nlohmann::json entry = {{"identity", identity},
                            {"records", seen.records},
                            {"first_seen", records::formatTimestamp(seen.first_seen)},
                            {"last_seen", records::formatTimestamp(seen.last_seen)}};
    if (seen.workload) entry["workload"] = workloadJson(*seen.workload);
    presenters.push_back(std::move(entry));
  }
  alert.summary = std::string(credentials::toString(use.scheme)) + " credential " +
                  shortFingerprint(credential.fingerprint) + " presented by " + std::to_string(use.presenters.size()) +
                  " workloads: " + names;
  alert.workload = slot->second.workload;
  alert.identity = slot->first;
  alert.scheme = use.scheme;
  alert.fingerprint = credential.fingerprint;
  alert.evidence = {{"presenters", std::move(presenters)},
                    {"window_s", options_.shared_window_ns / kNsPerSecond},
                    {"example", {{"method", record.method}, {"route", call.route.template_}}}};
  alert.dedupe_key = "shared_credential/" + credential.fingerprint;
  alert.ts_ns = now;
  raise(std::move(alert));
}

void DetectionEngine::staleCredential(const Call& call) {
  const HttpRecord& record = *call.record;
  const credentials::Credential& credential = record.credential;
  if (!credential.jwt) return;
  const credentials::JwtClaims& jwt = *credential.jwt;
  int64_t now_s = static_cast<int64_t>(record.ts_ns / kNsPerSecond);
  std::string reason, summary;
  Severity severity = Severity::kMedium;
  if (!jwt.exp) {
    reason = "no_expiry";
    summary = "JWT without an expiry (a forever token)";
  } else if (*jwt.exp < now_s && success(record)) {
    reason = "expired_accepted";
    severity = Severity::kHigh;
    summary = "expired JWT accepted with " + std::to_string(*record.status) + ": the server does not check expiry";
  } else if (jwt.iat && *jwt.exp - *jwt.iat > options_.jwt_max_lifetime_s) {
    reason = "long_lived";
    summary = "JWT valid for " + std::to_string((*jwt.exp - *jwt.iat) / 3600) + " h (limit " +
              std::to_string(options_.jwt_max_lifetime_s / 3600) + " h)";
  } else {
    return;
  }
  Alert alert;
  alert.detector = "stale_credential";
  alert.severity = severity;
  alert.workload = record.flow->workload;
  alert.identity = identityOf(record.flow->workload);
  alert.summary =
      summary + (jwt.iss.empty() ? "" : ", issuer " + jwt.iss) + (jwt.sub.empty() ? "" : ", subject " + jwt.sub);
  alert.scheme = credential.scheme;
  alert.fingerprint = credential.fingerprint;
  nlohmann::json claims = nlohmann::json::object();
  for (auto [key, value] :
       {std::pair<const char*, const std::optional<int64_t>*>{"iat", &jwt.iat}, {"exp", &jwt.exp}}) {
    if (*value) claims[key] = **value;
  }
  for (auto [key, value] :
       {std::pair<const char*, const std::string*>{"iss", &jwt.iss}, {"sub", &jwt.sub}, {"kid", &jwt.kid}}) {
    if (!value->empty()) claims[key] = *value;
  }
  alert.evidence = {{"reason", reason},
                    {"claims", std::move(claims)},
                    {"direction", record.flow->direction == Direction::kServer ? "server" : "client"}};
  if (record.status) alert.evidence["status"] = *record.status;
  alert.dedupe_key = "stale_credential/" + reason + "/" + credential.fingerprint;
  alert.ts_ns = record.ts_ns;
  raise(std::move(alert));
}

void DetectionEngine::unauthenticatedAccess(const Call& call) {
  const HttpRecord& record = *call.record;
  const records::FlowInfo& flow = *record.flow;
  if (flow.direction != Direction::kServer || !success(record)) return;
  const std::string& service = call.service;
  const std::string& route = call.route.template_;
  RouteAuth& auth = route_auth_[service + " " + record.method + " " + route];
  bool authenticated = record.credential.scheme != credentials::Scheme::kNone;
  if (authenticated) {
    ++auth.authenticated_ok;
    return;
  }
  ++auth.unauthenticated_ok;

  std::string why;
  if (flow.peer.scope == "external") {
    why = "from outside the cluster";
  } else if (!learning(record.ts_ns) && auth.authenticated_ok >= options_.min_authenticated) {
    why = "on a route whose successful responses carry credentials";
  } else {
    return;
  }
  Alert alert;
  alert.detector = "unauthenticated_access";
  alert.severity = Severity::kHigh;
  alert.workload = flow.workload;
  alert.identity = service;
  alert.summary =
      record.method + " " + route + " answered " + std::to_string(*record.status) + " without any credential " + why;
  alert.evidence = {{"method", record.method},
                    {"route", route},
                    {"status", *record.status},
                    {"caller", call.caller ? call.caller->identity : "ip:" + flow.remote.ip},
                    {"peer_scope", flow.peer.scope},
                    {"authenticated_2xx", auth.authenticated_ok},
                    {"unauthenticated_2xx", auth.unauthenticated_ok}};
  alert.dedupe_key = "unauthenticated_access/" + service + "/" + record.method + " " + route;
  alert.ts_ns = record.ts_ns;
  raise(std::move(alert));
}

}  // namespace apiwarden::detect
