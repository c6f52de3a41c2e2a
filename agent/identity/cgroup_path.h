// What a cgroup path says about its workload: a container (id, runtime), a Kubernetes pod (UID,
// QoS class), or a host service (systemd unit). Recognises the layouts of containerd, CRI-O and
// Docker under both the systemd and the cgroupfs cgroup drivers.
#pragma once

#include <string>
#include <string_view>

namespace apiwarden::identity {

struct PathIdentity {
  std::string container_id;  // 64 hex digits; empty when not a container
  std::string runtime;       // "containerd", "cri-o", "docker"; empty when the layout does not say
  std::string pod_uid;       // with dashes, as the API reports it
  std::string qos_class;     // "guaranteed", "burstable", "besteffort"
  std::string systemd_unit;  // "nginx.service", "session-3.scope" for host workloads
};

PathIdentity parseCgroupPath(std::string_view path);

}  // namespace apiwarden::identity
