// Detection: a RecordSink in front of the record writer that learns from every HTTP record and
// raises alerts. Time is the records' own (wall clock of each request), so a replayed stream gives
// the same alerts as the live one.
//
// Detectors (ids are stable; see README "Alerts"):
//   shared_credential        one credential presented by two or more workload identities in a window
//   credential_wrong_workload  a credential presented by another identity than its declared owner
//                            (config) or the only one that presented it while learning
//   stale_credential         a JWT without exp, living longer than allowed, or expired but accepted
//   unauthenticated_access   a 2xx without any credential on a route whose 2xx responses carry one,
//                            or from outside the cluster
//   object_enumeration       one caller touching many distinct object ids on one route in a window
//   auth_failure_burst       one caller collecting many 401/403 in a window
//   new_endpoint, new_peer   a caller past its learning period using a route or a destination it
//                            never used before
//   rate_spike, error_spike  a caller's requests (or 5xx answers) per second far above its own
//                            streaming mean and deviation
//   response_volume          a response far larger than the route's usual ones (exfiltration-sized)
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "agent/detect/alert.h"
#include "agent/detect/hash_counts.h"
#include "agent/detect/route.h"
#include "agent/detect/stable_hash.h"
#include "agent/export/record.h"
#include "baseline.pb.h"

namespace apiwarden::detect {

// From --detect-config (agent/detect/config.h): who owns which credential, and what not to report.
struct CredentialOwner {
  std::string fingerprint, jwt_sub, jwt_client_id;  // one of them identifies the credential
  std::string owner;                                // the identity that may present it
};

struct Suppression {
  std::string detector, identity, fingerprint;  // empty matches anything
  uint64_t until_ns = 0;                        // wall clock; 0: no expiry
};

struct DetectConfig {
  std::vector<CredentialOwner> owners;
  std::vector<Suppression> suppressions;
};

struct DetectOptions {
  DetectConfig config;
  uint64_t learning_ns = 300'000'000'000ULL;                    // behavioural detectors wait this long after start
  uint64_t shared_window_ns = 3'600'000'000'000ULL;             // presenters of one credential counted over this
  int64_t jwt_max_lifetime_s = 86'400;                          // exp - iat beyond this is a long-lived token
  uint64_t static_max_age_ns = 90ULL * 86'400 * 1'000'000'000;  // a static key in use longer than this is stale
  uint64_t min_authenticated = 20;   // authenticated 2xx on a route before it counts as protected
  size_t max_credentials = 100'000;  // credentials followed by shared_credential
  size_t max_routes_per_service = 512;
  uint64_t burst_window_ns = 60'000'000'000ULL;   // object_enumeration and auth_failure_burst count over this
  size_t enumeration_threshold = 30;              // distinct object ids per caller and route in the window
  size_t auth_failure_threshold = 20;             // 401/403 per caller in the window
  size_t max_keys = 100'000;                      // per detector table; beyond, new keys are not followed
  double spike_sigmas = 6;                        // rate/error spike: above mean + this many standard deviations
  double spike_factor = 3;                        // ... and this many times the mean
  uint64_t min_spike_rate = 50;                   // ... and at least this many requests in the second
  uint64_t min_error_spike = 10;                  // ... or this many 5xx
  uint64_t min_volume_bytes = 1 << 20;            // response_volume: never below this
  double volume_factor = 20;                      // ... and this many times the route's mean response
  uint64_t alert_window_ns = 600'000'000'000ULL;  // repeats of one alert within it are counted, not written
};

// Every detector's stable id, in the order of DetectStats::by_detector.
inline constexpr std::array<std::string_view, 11> kDetectorIds = {"shared_credential",  "credential_wrong_workload",
                                                                  "stale_credential",   "unauthenticated_access",
                                                                  "object_enumeration", "new_endpoint",
                                                                  "new_peer",           "rate_spike",
                                                                  "error_spike",        "auth_failure_burst",
                                                                  "response_volume"};

struct DetectStats {
  uint64_t records = 0;
  uint64_t alerts = 0;
  std::array<uint64_t, kDetectorIds.size()> by_detector{};  // alerts raised (repeats included)
  uint64_t suppressed = 0;                                  // alerts a suppression in the config held back
  uint64_t credentials_dropped = 0;                         // not followed: max_credentials reached
};

// Exponentially weighted mean and variance of a stream (West's incremental form).
struct Ewma {
  double mean = 0, var = 0;
  uint64_t n = 0;
  void add(double x, double alpha);
};

// The identity a detector keys on, stable across the pods of one workload: the SPIFFE ID, else
// namespace/owner, namespace/pod, the systemd unit, the cgroup path.
std::string identityOf(const records::Workload& workload);

// How alert summaries name a credential: "bearer credential 5f0c9e1a" (scheme, fingerprint prefix).
std::string credentialLabel(credentials::Scheme scheme, const std::string& fingerprint);

// Who called: on the client side the workload itself; on the server side the peer when it is a
// workload on this node, else the remote address.
struct Caller {
  const std::string* identity = nullptr;
  uint64_t key = 0;                             // stableHash(*identity)
  const records::Workload* workload = nullptr;  // null for callers known by address only
};

// One HTTP exchange as the detectors see it.
struct Call {
  const records::HttpRecord* record = nullptr;
  std::optional<Caller> caller;          // absent: a local caller not named yet (never guessed)
  const std::string* service = nullptr;  // the callee: a workload identity, or "ip:port"
  uint64_t service_key = 0;              // stableHash(*service)
  const std::string* route = nullptr;    // template, interned per service (bounded)
  std::string_view last_id;              // the last object id in the path (a view into it)
  uint64_t endpoint = 0;                 // stableHash of "service METHOD route": keys the route's state
                                         // and is what the caller's and credential's endpoints hold
  // A node-local call is recorded at both ends; behavioural detectors count it once, from the
  // server's record (or the client's when the server is not a workload on this node).
  bool primary = false;
};

class DetectionEngine final : public records::RecordSink {
 public:
  DetectionEngine(records::RecordSink& next, AlertLog& alerts, DetectOptions options = {});

  void write(const records::HttpRecord& record) override;
  void write(const records::ConnectionRecord& record) override { next_.write(record); }
  void flush() override { next_.flush(); }
  const DetectStats& stats() const { return stats_; }

  // The learnt state, for <state-dir>/baseline.pb (agent/detect/baseline_store.h).
  void save(proto::Baseline& out) const;
  void restore(const proto::Baseline& in);

 private:
  struct Presenter {
    std::optional<records::Workload> workload;  // absent for callers known by address only
    uint64_t first_seen = 0, last_seen = 0;
    uint64_t records = 0;  // http records with the credential: a node-local call gives two (both ends)
  };
  // Everything kept per credential: one lookup per record serves its three detectors.
  struct CredentialUse {
    credentials::Scheme scheme = credentials::Scheme::kNone;
    uint64_t first_seen = 0;
    std::string learned_owner;  // the one identity that presented it while learning; "" several or none
    bool owner_learnt = false;  // learned_owner was set (it may have been cleared since)
    std::unordered_set<uint64_t> endpoints, peers;  // hashes, as in CallerBaseline
    std::map<std::string, Presenter> presenters;    // by identity, within the shared window
  };
  struct RouteAuth {
    uint64_t authenticated_ok = 0, unauthenticated_ok = 0;
    uint32_t schemes_ok = 0;  // bit (1 << Scheme) for each scheme its 2xx responses carried
  };

  struct IdUse {
    uint64_t ts_ns = 0;
    uint64_t id_hash = 0;  // ids are counted by hash: no string kept per request
    int64_t number = -1;   // the id's value when it is a decimal number
    bool denied = false;   // answered 401/403/404
  };
  struct IdWindow {  // object ids one caller touched on one route, oldest first
    // seen[oldest..] is the window: expired entries are dropped in bulk once they are half of it.
    std::vector<IdUse> seen;
    size_t oldest = 0;
    HashCounts ids;                     // of the window's id hashes
    size_t denied = 0;                  // entries of the window that were denied
    size_t learned_max = 0;             // most distinct ids in a window while learning
    std::array<std::string, 5> recent;  // the last ids, as evidence
    size_t recent_next = 0;
  };
  struct FailureWindow {
    std::deque<uint64_t> at;
  };
  struct CallerRate {
    uint64_t second = 0;                // the second being counted
    uint64_t requests = 0, errors = 0;  // in it
    Ewma rate, error_rate;              // per-second counts of the seconds before
  };
  // Sets of keys are kept as 64-bit hashes of the keys: a collision (about n^2 / 2^65) would
  // only hide one novelty, and no string is stored per entry.
  struct CallerBaseline {
    uint64_t first_seen = 0;
    std::unordered_set<uint64_t> endpoints;  // hashes of "service METHOD route"
    std::unordered_set<uint64_t> peers;      // hashes of services
  };

  Call describe(const records::HttpRecord& record);
  struct CachedIdentity;
  const CachedIdentity& identity(const records::Workload& workload);
  // key_ = parts joined by spaces: the lookup key of a detector table, built without allocating.
  const std::string& key(std::initializer_list<std::string_view> parts);
  CredentialUse* credentialUse(const Call& call);
  void sharedCredential(const Call& call, CredentialUse* use);
  void staleCredential(const Call& call, CredentialUse* use);
  void credentialWrongWorkload(const Call& call, CredentialUse* use);
  bool jtiReplayed(const credentials::JwtClaims& jwt, const std::string& fingerprint, const Call& call);
  bool suppressed(const Alert& alert) const;
  // The per-caller and per-route detectors get their state looked up once per record; null when
  // the detector does not apply to this record or the table is full.
  struct CallerState;
  struct RouteState;
  void unauthenticatedAccess(const Call& call, RouteState* route);
  void objectEnumeration(const Call& call);
  void authFailureBurst(const Call& call, CallerState* caller);
  void newEndpointOrPeer(const Call& call, CallerState* caller, CredentialUse* credential);
  void spikes(const Call& call, CallerState* caller);
  void responseVolume(const Call& call, RouteState* route);
  Alert alertFor(const Call& call, std::string detector, Severity severity);
  void raise(Alert alert);
  bool learning(uint64_t ts_ns) const { return ts_ns < started_ns_ + options_.learning_ns; }

  records::RecordSink& next_;
  AlertLog& alerts_;
  DetectOptions options_;
  DetectStats stats_;
  uint64_t started_ns_ = 0;  // when learning began (restored from a saved baseline, or the first record)
  bool started_ = false;
  RouteTable route_table_;
  Route route_;                                                 // scratch, reused per record
  std::unordered_map<std::string, CredentialUse> credentials_;  // by fingerprint
  struct JtiUse {
    uint64_t token = 0, presenter = 0;  // hashes of the fingerprint and of the presenting identity
  };
  std::unordered_map<uint64_t, JtiUse> jtis_;  // by hash of "issuer jti"
  // The config's owners, by what identifies the credential.
  std::unordered_map<std::string, const CredentialOwner*> owner_by_fingerprint_, owner_by_sub_, owner_by_client_id_;
  // What is kept per caller and per route: one lookup each per record serves every detector.
  struct CallerState {
    CallerBaseline baseline;
    CallerRate rate;
    FailureWindow failures;
  };
  struct RouteState {
    RouteAuth auth;
    Ewma response_sizes;
  };
  CallerState* callerState(const Call& call);
  RouteState* routeState(const Call& call);

  std::unordered_map<uint64_t, IdWindow> id_windows_;      // by hash of "caller service method template"
  std::unordered_map<uint64_t, CallerState> callers_;      // by hash of the caller's identity
  std::unordered_map<uint64_t, RouteState> routes_state_;  // by hash of "service method template"
  struct CachedIdentity {
    records::Workload inputs;  // the fields identityOf reads, as they were
    std::string identity;
    uint64_t key = 0;  // stableHash(identity): what the detector tables are keyed by
  };
  std::unordered_map<uint64_t, CachedIdentity> identities_;  // by cgroup id
  std::string key_, address_caller_, address_service_;       // scratch, reused per record
};

}  // namespace apiwarden::detect
