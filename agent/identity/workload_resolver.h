// Names a workload from its cgroup id: the cgroup path, what the path's layout says (container,
// pod UID, systemd unit), a process in it (executable, user), and, when the pod is known to the
// Kubernetes API, its name, namespace, service account, owner, labels and SPIFFE ID.
// Lookups touch only local caches and procfs: never the network.
#pragma once

#include "agent/flows/connection.h"
#include "agent/identity/cgroup_resolver.h"
#include "agent/identity/kube_api.h"

#include <string>
#include <unordered_map>

namespace apiwarden::identity {

struct WorkloadResolverOptions {
  std::string trust_domain = "cluster.local";
  uint64_t cache_ttl_ns = 30'000'000'000ULL;  // describe() results per cgroup
  size_t max_cached = 4096;
};

struct WorkloadResolverStats {
  uint64_t described = 0;
  uint64_t cache_hits = 0;
  uint64_t pod_misses = 0;  // a pod UID the API has not (yet) told us about
};

class WorkloadResolver final : public flows::WorkloadDirectory {
 public:
  // pods may be null (no Kubernetes API).
  WorkloadResolver(CgroupResolver& cgroups, const PodCache* pods, const Clock& clock,
                   WorkloadResolverOptions options = {});

  records::Workload describe(uint64_t cgroup_id) override;
  void refresh(records::Workload& workload) override;
  const WorkloadResolverStats& stats() const { return stats_; }

 private:
  struct Cached {
    records::Workload workload;
    uint64_t expires_ns;
  };

  std::optional<records::Process> processIn(const std::string& cgroup_path) const;
  void fillFromPath(records::Workload& workload);
  void fillFromPod(records::Workload& workload);

  CgroupResolver& cgroups_;
  const PodCache* pods_;
  const Clock& clock_;
  WorkloadResolverOptions options_;
  WorkloadResolverStats stats_;
  std::unordered_map<uint64_t, Cached> cache_;
};

}  // namespace apiwarden::identity
