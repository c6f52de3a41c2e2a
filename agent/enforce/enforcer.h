// Enforcement policy: turns `apiwardenctl` requests into kernel rules (agent/loader/enforce_program)
// and keeps them honest. A rule cuts a workload (all egress, egress to destinations, ingress) or
// refuses a credential (revoke; bind to one workload). Every rule has an id, a mode (enforce, or
// monitor: counted as would-block, nothing dropped), a reason, who asked, and an expiry (the
// kernel checks it too, so expiry holds while no agent runs). Each change writes an audit record
// to the alerts stream; what the kernel refused or would have refused is raised as alerts.
// Rule metadata is saved in the state dir; the kernel maps, pinned, are what enforces.
#pragma once

#include "agent/detect/alert.h"
#include "agent/enforce/destination.h"
#include "agent/enforce/responses.h"
#include "agent/identity/workload_resolver.h"
#include "agent/loader/enforce_program.h"
#include "apiwarden/common/clock.h"
#include "apiwarden/common/result.h"

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace apiwarden::enforce {

enum class Mode : uint8_t { kMonitor, kEnforce };
enum class Action : uint8_t { kCut, kRevoke, kBind };
enum class Direction : uint8_t { kEgress, kIngress, kBoth };

struct EnforcerOptions {
  Mode mode = Mode::kMonitor;
  std::string cgroup_mount;  // the cgroup v2 mount
  std::string cgroup_root;   // absolute directory the programs attach to (below the mount)
  std::string pin_dir = "/sys/fs/bpf/apiwarden";
  std::string state_path;    // rule metadata (JSON), e.g. <state-dir>/enforcement.json
  std::string trust_domain = "cluster.local";  // of SPIFFE IDs naming destinations
  uint64_t default_ttl_s = 3600;
  std::vector<ResponsePolicy> responses;  // auto-response policies; empty: none
};

struct Rule {
  std::string id;  // "r<slot>"
  uint32_t slot = 0;
  Action action = Action::kCut;
  Mode mode = Mode::kEnforce;
  std::string workload;  // as the user named it (cut: the target; bind: the owner)
  std::vector<std::pair<uint64_t, std::string>> cgroups;  // resolved: id, path below the mount
  Direction direction = Direction::kEgress;
  std::vector<Destination> destinations;
  std::string fingerprint;
  uint64_t token_hash = 0;  // kernel hash of a revoked or bound credential; 0 while waiting to see it again
  std::string reason, actor;
  uint64_t created_ns = 0;  // wall clock
  uint64_t expires_ns = 0;  // wall clock; 0: permanent
  apiwarden_rule_counters reported{};  // counts already raised as alerts

  // A credential rule with no kernel hash (an earlier version's): nothing in the kernel until the
  // agent sees a request carrying the credential.
  bool waiting() const { return action != Action::kCut && token_hash == 0; }
};

// What the kernel refused (enforce) or would have refused (monitor), since the agent started.
enum class Refusal : uint8_t { kConnect, kPacket, kAbort, kRequest };
constexpr size_t kRefusalCount = 4;
std::string_view toString(Refusal refusal);  // "connect", "packet", "abort", "request"

struct EnforcerStats {
  uint64_t rules = 0;
  std::array<std::array<uint64_t, kRefusalCount>, 2> refused{};  // [Mode][Refusal]
  uint64_t control_requests = 0, control_errors = 0;
};

class Enforcer {
 public:
  // audit may be null (audit records then go to the agent's log only).
  // pods (may be null): the pods of this node, for destinations named as workloads.
  static Result<std::unique_ptr<Enforcer>> open(const EnforcerOptions& options, identity::WorkloadResolver& workloads,
                                                const identity::PodCache* pods, detect::AlertLog* audit,
                                                const Clock& clock);

  // One control request ({"op": "cut"|"restore"|"revoke"|"bind"|"list"|"status", ...}); actor
  // names who sent it (from the socket's peer credentials). Never throws.
  nlohmann::json handle(const nlohmann::json& request, const std::string& actor);

  // Applies the auto-response policies to an alert as it is written.
  void respond(const detect::Alert& alert);

  // Once a second: expires rules, raises what the kernel refused since the last tick.
  void tick();

  // The pipeline tells which kernel token hash a credential fingerprint has (revoke needs it, and a
  // rule waiting for its credential is installed by it).
  void noteCredential(const std::string& fingerprint, uint64_t token_hash);
  // The key of the kernel's credential hash (to compute token hashes).
  std::array<uint64_t, 2> tokenHashKey() const { return hash_key_; }

  EnforcerStats stats() const { return stats_; }
  const std::map<uint32_t, Rule>& rules() const { return rules_; }

 private:
  Enforcer(const EnforcerOptions& options, identity::WorkloadResolver& workloads, const identity::PodCache* pods,
           detect::AlertLog* audit, const Clock& clock)
      : options_(options), workloads_(workloads), pods_(pods), audit_(audit), clock_(clock) {}

  Result<void> restoreState();
  Result<nlohmann::json> cut(const nlohmann::json& request, const std::string& actor);
  Result<nlohmann::json> credentialRule(const nlohmann::json& request, const std::string& actor, Action action);
  Result<nlohmann::json> restore(const nlohmann::json& request, const std::string& actor);
  nlohmann::json status() const;

  Result<std::vector<std::pair<uint64_t, std::string>>> resolveWorkload(const std::string& name);
  Result<std::vector<Destination>> resolveDestination(const std::string& text) const;
  Result<void> common(const nlohmann::json& request, const std::string& actor, Rule& rule);
  Result<uint32_t> freeSlot() const;
  Result<void> add(const Rule& rule);
  Result<void> install(const Rule& rule);
  Result<void> uninstall(const Rule& rule);
  Result<void> syncConfig();
  uint64_t bootDeadline(const Rule& rule) const;
  void remove(uint32_t slot, const std::string& event, const std::string& actor);
  void auditRecord(const std::string& event, const Rule& rule, const std::string& actor);
  void save() const;
  nlohmann::ordered_json toJson(const Rule& rule) const;

  EnforcerOptions options_;
  identity::WorkloadResolver& workloads_;
  const identity::PodCache* pods_;
  detect::AlertLog* audit_;
  const Clock& clock_;
  std::unique_ptr<loader::EnforceProgram> program_;
  std::array<uint64_t, 2> hash_key_{};
  std::map<uint32_t, Rule> rules_;  // by slot
  std::unordered_map<std::string, uint64_t> token_hashes_;  // fingerprint -> kernel token hash
  size_t waiting_ = 0;  // rules waiting(), counted by syncConfig: noteCredential looks only when some are
  EnforcerStats stats_;
};

std::string_view toString(Mode mode);
std::string_view toString(Action action);
std::string_view toString(Direction direction);

}  // namespace apiwarden::enforce
