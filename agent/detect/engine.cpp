#include "agent/detect/engine.h"

#include <vector>

#include "agent/export/json_lines.h"

namespace apiwarden::detect {
namespace {

using records::Direction;
using records::HttpRecord;

constexpr uint64_t kNsPerSecond = 1'000'000'000ULL;

nlohmann::json schemeNames(uint32_t mask) {
  nlohmann::json names = nlohmann::json::array();
  for (unsigned s = 0; s < 32; ++s) {
    if (mask & (1u << s)) names.push_back(credentials::toString(static_cast<credentials::Scheme>(s)));
  }
  return names;
}

bool success(const HttpRecord& record) { return record.status && *record.status >= 200 && *record.status < 300; }

}  // namespace

std::string credentialLabel(credentials::Scheme scheme, const std::string& fingerprint) {
  return std::string(credentials::toString(scheme)) + " credential " + fingerprint.substr(0, 8);
}

std::string identityOf(const records::Workload& w) {
  if (!w.spiffe_id.empty()) return w.spiffe_id;
  if (!w.ns.empty() && !w.owner.empty()) return w.ns + "/" + w.owner;
  if (!w.ns.empty() && !w.pod.empty()) return w.ns + "/pod/" + w.pod;
  if (!w.systemd_unit.empty()) return "unit:" + w.systemd_unit;
  if (w.cgroup_path) return "cgroup:" + *w.cgroup_path;
  return "cgroup-id:" + std::to_string(w.cgroup_id);
}

DetectionEngine::DetectionEngine(records::RecordSink& next, AlertLog& alerts, DetectOptions options)
    : next_(next), alerts_(alerts), options_(std::move(options)), route_table_(options_.max_routes_per_service) {
  for (const CredentialOwner& owner : options_.config.owners) {
    if (!owner.fingerprint.empty()) owner_by_fingerprint_[owner.fingerprint] = &owner;
    if (!owner.jwt_sub.empty()) owner_by_sub_[owner.jwt_sub] = &owner;
    if (!owner.jwt_client_id.empty()) owner_by_client_id_[owner.jwt_client_id] = &owner;
  }
}

const DetectionEngine::CachedIdentity& DetectionEngine::identity(const records::Workload& w) {
  auto same = [](const records::Workload& a, const records::Workload& b) {
    return a.spiffe_id == b.spiffe_id && a.ns == b.ns && a.owner == b.owner && a.pod == b.pod &&
           a.systemd_unit == b.systemd_unit && a.cgroup_path == b.cgroup_path;
  };
  auto it = identities_.find(w.cgroup_id);
  if (it != identities_.end() && same(it->second.inputs, w)) return it->second;
  CachedIdentity& cached = identities_[w.cgroup_id];
  cached.inputs = {};
  cached.inputs.cgroup_id = w.cgroup_id;
  cached.inputs.cgroup_path = w.cgroup_path;
  cached.inputs.spiffe_id = w.spiffe_id;
  cached.inputs.ns = w.ns;
  cached.inputs.owner = w.owner;
  cached.inputs.pod = w.pod;
  cached.inputs.systemd_unit = w.systemd_unit;
  cached.identity = identityOf(w);
  cached.key = stableHash(cached.identity);
  return cached;
}

const std::string& DetectionEngine::key(std::initializer_list<std::string_view> parts) {
  key_.clear();
  for (std::string_view part : parts) {
    if (!key_.empty()) key_.push_back(' ');
    key_.append(part);
  }
  return key_;
}

Call DetectionEngine::describe(const HttpRecord& record) {
  const records::FlowInfo& flow = *record.flow;
  // Cleared here, not in identity(): the Call holds pointers into the cache (nodes stay put on
  // rehash, but not on clear).
  if (identities_.size() >= options_.max_keys) identities_.clear();
  Call call;
  call.record = &record;
  bool server = flow.direction == Direction::kServer;
  // The caller: never guessed, so a local caller not (yet) named is left out.
  auto named = [](const CachedIdentity& id, const records::Workload& workload) {
    return Caller{&id.identity, id.key, &workload};
  };
  if (!server) {
    call.caller = named(identity(flow.workload), flow.workload);
  } else if (flow.peer.workload) {
    call.caller = named(identity(*flow.peer.workload), *flow.peer.workload);
  } else if (flow.peer.scope != "node") {
    address_caller_ = "ip:" + flow.remote.ip;
    call.caller = Caller{&address_caller_, stableHash(address_caller_), nullptr};
  }
  if (server || flow.peer.workload) {
    const CachedIdentity& service = identity(server ? flow.workload : *flow.peer.workload);
    call.service = &service.identity;
    call.service_key = service.key;
  } else {
    address_service_ = "ip:" + flow.remote.ip + ":" + std::to_string(flow.remote.port);
    call.service = &address_service_;
    call.service_key = stableHash(address_service_);
  }
  routeOf(record.path, route_);
  call.route = &route_table_.intern(*call.service, route_.template_);
  call.last_id = route_.last_id;
  call.endpoint = stableHash(key({*call.service, record.method, *call.route}));
  call.primary = server || !flow.peer.workload;
  return call;
}

void DetectionEngine::write(const HttpRecord& record) {
  ++stats_.records;
  if (!started_) {
    started_ = true;
    started_ns_ = record.ts_ns;
  }
  Call call = describe(record);
  CallerState* caller = callerState(call);
  RouteState* route = routeState(call);
  CredentialUse* credential = credentialUse(call);
  sharedCredential(call, credential);
  credentialWrongWorkload(call, credential);
  staleCredential(call, credential);
  unauthenticatedAccess(call, route);
  objectEnumeration(call);
  authFailureBurst(call, caller);
  newEndpointOrPeer(call, caller, call.primary ? credential : nullptr);
  spikes(call, caller);
  responseVolume(call, route);
  next_.write(record);
}

DetectionEngine::CallerState* DetectionEngine::callerState(const Call& call) {
  if (!call.primary || !call.caller) return nullptr;
  uint64_t caller_key = call.caller->key;
  auto it = callers_.find(caller_key);
  if (it == callers_.end()) {
    if (callers_.size() >= options_.max_keys) return nullptr;
    it = callers_.emplace(caller_key, CallerState{}).first;
    it->second.baseline.first_seen = call.record->ts_ns;
    it->second.rate.second = call.record->ts_ns / kNsPerSecond;
  }
  return &it->second;
}

DetectionEngine::RouteState* DetectionEngine::routeState(const Call& call) {
  bool server = call.record->flow->direction == Direction::kServer;
  if (!call.primary && !server) return nullptr;
  auto it = routes_state_.find(call.endpoint);
  if (it == routes_state_.end()) {
    if (routes_state_.size() >= options_.max_keys) return nullptr;
    it = routes_state_.emplace(call.endpoint, RouteState{}).first;
  }
  return &it->second;
}

Alert DetectionEngine::alertFor(const Call& call, std::string detector, Severity severity) {
  Alert alert;
  alert.detector = std::move(detector);
  alert.severity = severity;
  if (call.caller) {
    if (call.caller->workload) alert.workload = *call.caller->workload;
    alert.identity = *call.caller->identity;
  }
  alert.scheme = call.record->credential.scheme;
  alert.fingerprint = call.record->credential.fingerprint;
  alert.ts_ns = call.record->ts_ns;
  return alert;
}

bool DetectionEngine::suppressed(const Alert& alert) const {
  for (const Suppression& s : options_.config.suppressions) {
    if ((s.detector.empty() || s.detector == alert.detector) && (s.identity.empty() || s.identity == alert.identity) &&
        (s.fingerprint.empty() || s.fingerprint == alert.fingerprint) &&
        (s.until_ns == 0 || alert.ts_ns < s.until_ns)) {
      return true;
    }
  }
  return false;
}

void DetectionEngine::raise(Alert alert) {
  if (suppressed(alert)) {
    ++stats_.suppressed;
    return;
  }
  ++stats_.alerts;
  for (size_t i = 0; i < kDetectorIds.size(); ++i) stats_.by_detector[i] += kDetectorIds[i] == alert.detector;
  alerts_.raise(alert);
}

DetectionEngine::CredentialUse* DetectionEngine::credentialUse(const Call& call) {
  const credentials::Credential& credential = call.record->credential;
  if (credential.fingerprint.empty()) return nullptr;
  auto it = credentials_.find(credential.fingerprint);
  if (it == credentials_.end()) {
    if (credentials_.size() >= options_.max_credentials) {
      ++stats_.credentials_dropped;
      return nullptr;
    }
    it = credentials_.emplace(credential.fingerprint, CredentialUse{}).first;
    it->second.scheme = credential.scheme;
    it->second.first_seen = call.record->ts_ns;
  }
  return &it->second;
}

void DetectionEngine::credentialWrongWorkload(const Call& call, CredentialUse* use) {
  const HttpRecord& record = *call.record;
  const credentials::Credential& credential = record.credential;
  if (!use || !call.caller) return;
  const std::string& presenter = *call.caller->identity;

  const CredentialOwner* declared = nullptr;
  std::string matched_by;
  if (auto it = owner_by_fingerprint_.find(credential.fingerprint); it != owner_by_fingerprint_.end()) {
    declared = it->second;
    matched_by = "fingerprint";
  } else if (credential.jwt && !credential.jwt->sub.empty() && owner_by_sub_.contains(credential.jwt->sub)) {
    declared = owner_by_sub_.at(credential.jwt->sub);
    matched_by = "jwt sub " + credential.jwt->sub;
  } else if (credential.jwt && !credential.jwt->client_id.empty() &&
             owner_by_client_id_.contains(credential.jwt->client_id)) {
    declared = owner_by_client_id_.at(credential.jwt->client_id);
    matched_by = "jwt client_id " + credential.jwt->client_id;
  }
  std::string owner;
  if (declared) {
    if (declared->owner == presenter) return;
    owner = declared->owner;
  } else {
    if (!use->owner_learnt) {
      use->owner_learnt = true;
      use->learned_owner = presenter;
      return;
    }
    if (use->learned_owner == presenter || use->learned_owner.empty()) return;
    if (learning(record.ts_ns)) {
      use->learned_owner.clear();  // presented by several identities while learning: it has no single owner
      return;
    }
    owner = use->learned_owner;
    matched_by = "learnt";
  }
  Alert alert = alertFor(call, "credential_wrong_workload", Severity::kHigh);
  alert.summary = credentialLabel(credential.scheme, credential.fingerprint) + " presented by " + presenter +
                  ", not by " + (declared ? "its owner " + owner : owner + ", which it was learnt with");
  alert.evidence = {{"presenter", presenter}, {"owner", owner}, {"owner_from", matched_by}};
  alert.evidence["request"] = {{"service", *call.service}, {"method", record.method}, {"route", *call.route}};
  alert.dedupe_key = "credential_wrong_workload/" + credential.fingerprint + "/" + presenter;
  raise(std::move(alert));
}

void DetectionEngine::sharedCredential(const Call& call, CredentialUse* state) {
  const HttpRecord& record = *call.record;
  const credentials::Credential& credential = record.credential;
  if (!state || !call.caller) return;
  const Caller& caller = *call.caller;
  CredentialUse& use = *state;
  uint64_t now = record.ts_ns;
  std::erase_if(use.presenters,
                [&](const auto& entry) { return entry.second.last_seen + options_.shared_window_ns < now; });
  auto [slot, added] = use.presenters.try_emplace(*caller.identity);
  Presenter& p = slot->second;
  if (added) {
    if (caller.workload) p.workload = *caller.workload;
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
  alert.summary = credentialLabel(use.scheme, credential.fingerprint) + " presented by " +
                  std::to_string(use.presenters.size()) + " workloads: " + names;
  alert.workload = slot->second.workload;
  alert.identity = slot->first;
  alert.scheme = use.scheme;
  alert.fingerprint = credential.fingerprint;
  alert.evidence = {{"presenters", std::move(presenters)},
                    {"window_s", options_.shared_window_ns / kNsPerSecond},
                    {"example", {{"method", record.method}, {"route", *call.route}}}};
  alert.dedupe_key = "shared_credential/" + credential.fingerprint;
  alert.ts_ns = now;
  raise(std::move(alert));
}

void DetectionEngine::staleCredential(const Call& call, CredentialUse* use) {
  const HttpRecord& record = *call.record;
  const credentials::Credential& credential = record.credential;
  if (!use) return;
  uint64_t age_ns = record.ts_ns > use->first_seen ? record.ts_ns - use->first_seen : 0;
  static const credentials::JwtClaims kNoClaims;
  const credentials::JwtClaims& jwt = credential.jwt ? *credential.jwt : kNoClaims;
  int64_t now_s = static_cast<int64_t>(record.ts_ns / kNsPerSecond);
  std::string reason, summary;
  Severity severity = Severity::kMedium;
  if (!credential.jwt) {
    using credentials::Scheme;
    bool static_key = credential.scheme == Scheme::kApiKey || credential.scheme == Scheme::kBasic ||
                      credential.scheme == Scheme::kBearer;
    if (!static_key || age_ns <= options_.static_max_age_ns) return;
    constexpr uint64_t kDay = 86'400 * kNsPerSecond;
    reason = "static_age";
    summary = "static " + std::string(credentials::toString(credential.scheme)) + " credential in use for " +
              std::to_string(age_ns / kDay) + " days (limit " + std::to_string(options_.static_max_age_ns / kDay) +
              "): never rotated";
  } else if (jtiReplayed(jwt, credential.fingerprint, call)) {
    reason = "jti_replayed";
    severity = Severity::kHigh;
    summary = "JWT id " + jwt.jti.substr(0, 64) + " seen again in another token or from another workload: replayed";
  } else if (!jwt.exp) {
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
                    {"first_seen", records::formatTimestamp(use->first_seen)},
                    {"claims", std::move(claims)},
                    {"direction", record.flow->direction == Direction::kServer ? "server" : "client"}};
  if (record.status) alert.evidence["status"] = *record.status;
  alert.dedupe_key = "stale_credential/" + reason + "/" + credential.fingerprint;
  alert.ts_ns = record.ts_ns;
  raise(std::move(alert));
}

// A JWT id (per issuer) names one token: the same id in another token, or the same token from
// another identity, is a replay (or a token minted twice).
bool DetectionEngine::jtiReplayed(const credentials::JwtClaims& jwt, const std::string& fingerprint, const Call& call) {
  if (jwt.jti.empty() || !call.caller) return false;
  uint64_t token = stableHash(fingerprint), presenter = call.caller->key;
  auto [it, added] = jtis_.try_emplace(stableHash(key({jwt.iss, jwt.jti})), JtiUse{token, presenter});
  if (added) {
    if (jtis_.size() > options_.max_credentials) jtis_.erase(it);
    return false;
  }
  return it->second.token != token || it->second.presenter != presenter;
}

void DetectionEngine::unauthenticatedAccess(const Call& call, RouteState* state) {
  const HttpRecord& record = *call.record;
  const records::FlowInfo& flow = *record.flow;
  if (!state || flow.direction != Direction::kServer || !success(record)) return;
  const std::string& service = *call.service;
  const std::string& route = *call.route;
  RouteAuth& auth = state->auth;
  bool authenticated = record.credential.scheme != credentials::Scheme::kNone;
  if (authenticated) {
    ++auth.authenticated_ok;
    auth.schemes_ok |= 1u << static_cast<unsigned>(record.credential.scheme);
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
                    {"caller", call.caller ? *call.caller->identity : "ip:" + flow.remote.ip},
                    {"peer_scope", flow.peer.scope},
                    {"authenticated_2xx", auth.authenticated_ok},
                    {"schemes_seen", schemeNames(auth.schemes_ok)},
                    {"unauthenticated_2xx", auth.unauthenticated_ok}};
  alert.dedupe_key = "unauthenticated_access/" + service + "/" + record.method + " " + route;
  alert.ts_ns = record.ts_ns;
  raise(std::move(alert));
}

}  // namespace apiwarden::detect
