// Owns the enforcement programs (bpf/progs/enforce.bpf.c): loads them, and attaches them to one
// cgroup subtree through links pinned under a bpffs directory of the agent's own, next to the
// pinned rule maps. Nothing is detached when this object goes away: a stopped or killed agent
// keeps enforcing. A restarted agent reuses the pinned maps and swaps its freshly loaded programs
// into the pinned links (bpf_link_update), so there is no moment without enforcement and no
// second attachment.
#pragma once

#include "apiwarden/abi.h"
#include "apiwarden/common/result.h"

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

struct apiwarden_enforce;
struct bpf_program;

namespace apiwarden::loader {

struct EnforceOptions {
  std::string cgroup_mount;                    // the cgroup v2 mount
  std::string cgroup_dir;                      // where the programs attach; never the hierarchy's root
  std::string pin_dir = "/sys/fs/bpf/apiwarden";  // maps/ and links/ below it
};

class EnforceProgram {
 public:
  static Result<std::unique_ptr<EnforceProgram>> open(const EnforceOptions& options);
  ~EnforceProgram();
  EnforceProgram(const EnforceProgram&) = delete;
  EnforceProgram& operator=(const EnforceProgram&) = delete;

  // True when the links were found pinned (an earlier agent's) and taken over.
  bool adopted() const { return adopted_; }
  // The pinned credential rules' hashes are of an earlier version's kernel hash: they match nothing.
  bool staleCredentialHashes() const { return stale_credential_hashes_; }
  uint64_t cgroupId() const { return cgroup_id_; }

  Result<void> putCut(uint64_t cgroup_id, const apiwarden_cut_rule& rule);
  Result<void> deleteCut(uint64_t cgroup_id);
  Result<std::vector<std::pair<uint64_t, apiwarden_cut_rule>>> cuts() const;
  Result<void> putDestination(const apiwarden_dest_key& key, const apiwarden_dest_value& value);
  Result<void> deleteDestination(const apiwarden_dest_key& key);
  Result<void> putCredential(uint64_t token_hash, const apiwarden_cred_rule& rule);
  Result<void> deleteCredential(uint64_t token_hash);
  Result<std::vector<std::pair<uint64_t, apiwarden_cred_rule>>> credentials() const;

  Result<apiwarden_enforce_config> config() const;
  Result<void> setConfig(const apiwarden_enforce_config& config);

  // A rule's counters summed over CPUs; reset when its id is given to a new rule.
  Result<apiwarden_rule_counters> counters(uint32_t rule_id) const;
  Result<void> resetCounters(uint32_t rule_id);

  // Tears down the established connections the current rules cut (runs an iter/tcp program).
  Result<void> teardown();
  // Adds the subtree's established client connections to the sockhash whose writes the credential
  // check sees (new ones join at establishment while credential rules exist).
  Result<void> joinSockhash();

  // The pinned objects this agent owns under pin_dir, for tests and `status`.
  size_t pinnedObjects() const;

 private:
  EnforceProgram() = default;
  Result<void> pinMaps();
  void removeStaleMapPins();
  Result<void> attach(const std::string& cgroup_dir);
  Result<void> initConfig(const EnforceOptions& options);
  Result<void> runIterator(bpf_program* program, const char* what);

  apiwarden_enforce* skel_ = nullptr;
  std::string pin_dir_;
  uint64_t cgroup_id_ = 0;
  bool adopted_ = false;
  bool stale_credential_hashes_ = false;
  std::vector<int> link_fds_;
};

}  // namespace apiwarden::loader
