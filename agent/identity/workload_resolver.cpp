#include "agent/identity/workload_resolver.h"

#include "agent/identity/cgroup_path.h"

#include <pwd.h>
#include <unistd.h>

#include <fstream>

namespace apiwarden::identity {
namespace {

std::string userName(uid_t uid) {
  passwd entry{};
  passwd* found = nullptr;
  char buffer[1024];
  if (getpwuid_r(uid, &entry, buffer, sizeof(buffer), &found) == 0 && found) return found->pw_name;
  return std::to_string(uid);
}

}  // namespace

WorkloadResolver::WorkloadResolver(CgroupResolver& cgroups, const PodCache* pods, const Clock& clock,
                                   WorkloadResolverOptions options)
    : cgroups_(cgroups), pods_(pods), clock_(clock), options_(std::move(options)) {}

// The first process listed in the cgroup: its executable and user.
std::optional<records::Process> WorkloadResolver::processIn(const std::string& cgroup_path) const {
  std::ifstream procs(cgroups_.mount() + cgroup_path + "/cgroup.procs");
  int pid = 0;
  if (!(procs >> pid) || pid <= 0) return std::nullopt;
  records::Process process;
  process.pid = pid;
  char exe[4096];
  ssize_t n = readlink(("/proc/" + std::to_string(pid) + "/exe").c_str(), exe, sizeof(exe) - 1);
  if (n <= 0) return std::nullopt;  // exited meanwhile: unknown, not guessed
  process.exe.assign(exe, static_cast<size_t>(n));
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("Uid:", 0) == 0) {
      process.user = userName(static_cast<uid_t>(std::stoul(line.substr(4))));
      break;
    }
  }
  return process;
}

records::Workload WorkloadResolver::describe(uint64_t cgroup_id) {
  uint64_t now = clock_.monotonicNs();
  if (auto it = cache_.find(cgroup_id); it != cache_.end() && it->second.expires_ns > now) {
    ++stats_.cache_hits;
    refresh(it->second.workload);
    return it->second.workload;
  }
  ++stats_.described;
  records::Workload workload;
  workload.cgroup_id = cgroup_id;
  fillFromPath(workload);
  fillFromPod(workload);
  if (!workload.cgroup_path) return workload;  // a miss is retried, not remembered
  if (cache_.size() >= options_.max_cached) cache_.clear();
  cache_[cgroup_id] = Cached{workload, now + options_.cache_ttl_ns};
  return workload;
}

void WorkloadResolver::refresh(records::Workload& workload) {
  fillFromPath(workload);
  fillFromPod(workload);
}

// A cgroup created after the last scan is found by a later, rate-limited rescan.
void WorkloadResolver::fillFromPath(records::Workload& workload) {
  if (workload.cgroup_path) return;
  workload.cgroup_path = cgroups_.pathOf(workload.cgroup_id);
  if (!workload.cgroup_path) return;
  PathIdentity path = parseCgroupPath(*workload.cgroup_path);
  workload.container_id = path.container_id;
  workload.pod_uid = path.pod_uid;
  workload.systemd_unit = path.systemd_unit;
  workload.process = processIn(*workload.cgroup_path);
}

void WorkloadResolver::fillFromPod(records::Workload& workload) {
  if (workload.pod_uid.empty() || !workload.pod.empty() || !pods_) return;
  auto pod = pods_->find(workload.pod_uid);
  if (!pod) {
    ++stats_.pod_misses;
    return;
  }
  workload.pod = pod->name;
  workload.ns = pod->ns;
  workload.service_account = pod->service_account;
  workload.node = pod->node;
  if (!pod->owner_kind.empty()) workload.owner = pod->owner_kind + "/" + pod->owner_name;
  workload.labels.assign(pod->labels.begin(), pod->labels.end());
  workload.spiffe_id = "spiffe://" + options_.trust_domain + "/ns/" + pod->ns + "/sa/" + pod->service_account;
}

}  // namespace apiwarden::identity
