// cgroup path layouts of containerd, CRI-O and Docker under the systemd and cgroupfs drivers.
#include "agent/identity/cgroup_path.h"

#include <gtest/gtest.h>

namespace apiwarden::identity {
namespace {

const std::string kId = "3f1c9e8a7b6d5c4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e";
const std::string kUid = "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d";
const std::string kUidUnderscores = "1a2b3c4d_5e6f_4a8b_9c0d_1e2f3a4b5c6d";

TEST(CgroupPath, KubernetesLayouts) {
  struct Case {
    std::string path, runtime, qos;
  };
  for (const auto& c : std::vector<Case>{
           {"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + kUidUnderscores +
                ".slice/cri-containerd-" + kId + ".scope",
            "containerd", "burstable"},
           {"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + kUidUnderscores + ".slice/crio-" +
                kId + ".scope",
            "cri-o", "besteffort"},
           {"/kubepods.slice/kubepods-pod" + kUidUnderscores + ".slice/docker-" + kId + ".scope", "docker",
            "guaranteed"},
           {"/kubepods/burstable/pod" + kUid + "/" + kId, "", "burstable"},
           {"/kubepods/pod" + kUid + "/" + kId, "", "guaranteed"},
           {"/kubepods/besteffort/pod" + kUid + "/" + kId, "", "besteffort"},
       }) {
    auto id = parseCgroupPath(c.path);
    EXPECT_EQ(id.container_id, kId) << c.path;
    EXPECT_EQ(id.pod_uid, kUid) << c.path;
    EXPECT_EQ(id.runtime, c.runtime) << c.path;
    EXPECT_EQ(id.qos_class, c.qos) << c.path;
    EXPECT_EQ(id.systemd_unit, "") << c.path;
  }
}

TEST(CgroupPath, PodSliceWithoutContainer) {
  auto id = parseCgroupPath("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + kUidUnderscores +
                            ".slice");
  EXPECT_EQ(id.pod_uid, kUid);
  EXPECT_EQ(id.container_id, "");
}

TEST(CgroupPath, StandaloneDocker) {
  for (const auto& path : {"/system.slice/docker-" + kId + ".scope", "/docker/" + kId}) {
    auto id = parseCgroupPath(path);
    EXPECT_EQ(id.container_id, kId) << path;
    EXPECT_EQ(id.runtime, "docker") << path;
    EXPECT_EQ(id.pod_uid, "") << path;
  }
}

TEST(CgroupPath, HostServices) {
  EXPECT_EQ(parseCgroupPath("/system.slice/nginx.service").systemd_unit, "nginx.service");
  EXPECT_EQ(parseCgroupPath("/user.slice/user-1000.slice/session-3.scope").systemd_unit, "session-3.scope");
  EXPECT_EQ(parseCgroupPath("/").systemd_unit, "");
  EXPECT_EQ(parseCgroupPath("/apiwarden-demo-1/api").systemd_unit, "");
}

TEST(CgroupPath, LookalikesAreNotGuessed) {
  auto id = parseCgroupPath("/kubepods.slice/kubepods-podnot-a-uid.slice/cri-containerd-abc.scope");
  EXPECT_EQ(id.pod_uid, "");
  EXPECT_EQ(id.container_id, "");
  EXPECT_EQ(parseCgroupPath("/random/" + kId).container_id, "");  // a bare id outside a pod or docker
}

}  // namespace
}  // namespace apiwarden::identity
