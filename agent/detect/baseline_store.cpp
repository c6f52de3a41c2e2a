#include "agent/detect/baseline_store.h"

#include "apiwarden/common/state_file.h"

#include <fstream>
#include <sstream>

namespace apiwarden::detect {
namespace {

constexpr const char* kKind = "apiwarden.baseline";

void toProto(const Ewma& from, proto::Ewma* to) {
  to->set_mean(from.mean);
  to->set_var(from.var);
  to->set_n(from.n);
}

Ewma fromProto(const proto::Ewma& from) { return {from.mean(), from.var(), from.n()}; }

}  // namespace

void DetectionEngine::save(proto::Baseline& out) const {
  out.set_learning_started_ns(started_ns_);
  for (const auto& [key, state] : callers_) {
    proto::CallerBaseline* caller = out.add_callers();
    caller->set_key(key);
    caller->set_first_seen_ns(state.baseline.first_seen);
    for (uint64_t endpoint : state.baseline.endpoints) caller->add_endpoints(endpoint);
    for (uint64_t peer : state.baseline.peers) caller->add_peers(peer);
    toProto(state.rate.rate, caller->mutable_rate());
    toProto(state.rate.error_rate, caller->mutable_error_rate());
  }
  for (const auto& [key, state] : routes_state_) {
    proto::RouteBaseline* route = out.add_routes();
    route->set_key(key);
    route->set_authenticated_ok(state.auth.authenticated_ok);
    route->set_unauthenticated_ok(state.auth.unauthenticated_ok);
    route->set_schemes_ok(state.auth.schemes_ok);
    toProto(state.response_sizes, route->mutable_response_bytes());
  }
  for (const auto& [key, window] : id_windows_) {
    if (window.learned_max == 0) continue;
    proto::IdBaseline* ids = out.add_id_windows();
    ids->set_key(key);
    ids->set_learned_max(window.learned_max);
  }
  for (const auto& [fingerprint, use] : credentials_) {
    proto::CredentialSeen* credential = out.add_credentials();
    credential->set_fingerprint(fingerprint);
    credential->set_scheme(static_cast<uint32_t>(use.scheme));
    credential->set_first_seen_ns(use.first_seen);
    credential->set_owner_learnt(use.owner_learnt);
    credential->set_learned_owner(use.learned_owner);
    for (uint64_t endpoint : use.endpoints) credential->add_endpoints(endpoint);
    for (uint64_t peer : use.peers) credential->add_peers(peer);
  }
}

void DetectionEngine::restore(const proto::Baseline& in) {
  started_ = true;
  started_ns_ = in.learning_started_ns();
  for (const auto& caller : in.callers()) {
    if (callers_.size() >= options_.max_keys) break;
    CallerState& state = callers_[caller.key()];
    state.baseline.first_seen = caller.first_seen_ns();
    state.baseline.endpoints.insert(caller.endpoints().begin(), caller.endpoints().end());
    state.baseline.peers.insert(caller.peers().begin(), caller.peers().end());
    state.rate.rate = fromProto(caller.rate());
    state.rate.error_rate = fromProto(caller.error_rate());
  }
  for (const auto& route : in.routes()) {
    if (routes_state_.size() >= options_.max_keys) break;
    RouteState& state = routes_state_[route.key()];
    state.auth = {route.authenticated_ok(), route.unauthenticated_ok(), route.schemes_ok()};
    state.response_sizes = fromProto(route.response_bytes());
  }
  for (const auto& ids : in.id_windows()) {
    if (id_windows_.size() >= options_.max_keys) break;
    id_windows_[ids.key()].learned_max = ids.learned_max();
  }
  for (const auto& credential : in.credentials()) {
    if (credentials_.size() >= options_.max_credentials) break;
    CredentialUse& use = credentials_[credential.fingerprint()];
    use.scheme = static_cast<credentials::Scheme>(std::min<uint32_t>(credential.scheme(), 6));
    use.first_seen = credential.first_seen_ns();
    use.owner_learnt = credential.owner_learnt();
    use.learned_owner = credential.learned_owner();
    use.endpoints.insert(credential.endpoints().begin(), credential.endpoints().end());
    use.peers.insert(credential.peers().begin(), credential.peers().end());
  }
}

Result<LoadResult> loadBaseline(const std::string& path, DetectionEngine& engine) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return LoadResult{};
    return fail(errno, "reading " + path);
  }
  std::stringstream bytes;
  bytes << in.rdbuf();
  proto::StateFile file;
  std::string problem;
  if (!file.ParseFromString(bytes.str())) {
    problem = "not a readable protobuf StateFile";
  } else if (file.kind() != kKind) {
    problem = "a foreign file (kind \"" + file.kind().substr(0, 64) + "\")";
  } else if (file.version() != kBaselineVersion) {
    problem =
        "layout version " + std::to_string(file.version()) + ", this agent reads " + std::to_string(kBaselineVersion);
  }
  if (problem.empty()) {
    engine.restore(file.baseline());
    return LoadResult{LoadOutcome::kLoaded, {}};
  }
  auto aside = setAside(path);
  if (!aside) return std::unexpected(std::move(aside.error()).context(problem));
  return LoadResult{LoadOutcome::kSetAside, problem + "; moved to " + *aside};
}

Result<void> saveBaseline(const std::string& path, const DetectionEngine& engine) {
  proto::StateFile file;
  file.set_kind(kKind);
  file.set_version(kBaselineVersion);
  engine.save(*file.mutable_baseline());
  std::string data;
  if (!file.SerializeToString(&data)) return fail(EINVAL, "serializing the baseline");

  return writeFileAtomically(path, data);
}

}  // namespace apiwarden::detect
