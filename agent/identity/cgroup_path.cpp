#include "agent/identity/cgroup_path.h"

#include <algorithm>
#include <array>
#include <vector>

namespace apiwarden::identity {
namespace {

bool isContainerId(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

bool isPodUid(std::string_view s) {
  return s.size() == 36 && std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(c) || c == '-'; });
}

bool consume(std::string_view& s, std::string_view prefix) {
  if (!s.starts_with(prefix)) return false;
  s.remove_prefix(prefix.size());
  return true;
}

bool consumeSuffix(std::string_view& s, std::string_view suffix) {
  if (!s.ends_with(suffix)) return false;
  s.remove_suffix(suffix.size());
  return true;
}

// systemd driver: "kubepods-burstable-pod1234_5678.slice" or "kubepods-pod1234_5678.slice".
bool systemdPod(std::string_view part, PathIdentity& id) {
  if (!consume(part, "kubepods-") || !consumeSuffix(part, ".slice")) return false;
  std::string qos = "guaranteed";
  for (std::string_view klass : {"burstable", "besteffort"}) {
    if (part.starts_with(klass) && part.substr(klass.size()).starts_with("-")) {
      qos = klass;
      part.remove_prefix(klass.size() + 1);
    }
  }
  if (!consume(part, "pod")) return false;
  std::string uid(part);
  std::replace(uid.begin(), uid.end(), '_', '-');
  if (!isPodUid(uid)) return false;
  id.pod_uid = uid;
  id.qos_class = qos;
  return true;
}

// systemd driver scopes: "cri-containerd-<id>.scope", "crio-<id>.scope", "docker-<id>.scope".
bool systemdContainer(std::string_view part, PathIdentity& id) {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 3> kScopes = {
      {{"cri-containerd-", "containerd"}, {"crio-", "cri-o"}, {"docker-", "docker"}}};
  if (!consumeSuffix(part, ".scope")) return false;
  for (auto [prefix, runtime] : kScopes) {
    std::string_view rest = part;
    if (consume(rest, prefix) && isContainerId(rest)) {
      id.container_id = rest;
      id.runtime = runtime;
      return true;
    }
  }
  return false;
}

}  // namespace

PathIdentity parseCgroupPath(std::string_view path) {
  std::vector<std::string_view> parts;
  for (size_t start = 0; start <= path.size();) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    if (slash > start) parts.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  PathIdentity id;
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string_view part = parts[i];
    if (systemdPod(part, id) || systemdContainer(part, id)) continue;
    std::string_view pod = part;
    if (consume(pod, "pod") && isPodUid(pod)) {  // cgroupfs driver: /kubepods[/<qos>]/pod<uid>/<id>
      id.pod_uid = pod;
      id.qos_class = i > 0 && (parts[i - 1] == "burstable" || parts[i - 1] == "besteffort") ? std::string(parts[i - 1])
                                                                                              : "guaranteed";
      continue;
    }
    if (isContainerId(part) && (!id.pod_uid.empty() || (i > 0 && parts[i - 1] == "docker"))) {
      id.container_id = part;
      if (id.pod_uid.empty()) id.runtime = "docker";  // cgroupfs docker: /docker/<id>
      continue;
    }
  }
  if (id.container_id.empty() && id.pod_uid.empty() && !parts.empty()) {
    std::string_view last = parts.back();
    if (last.ends_with(".service") || last.ends_with(".scope")) id.systemd_unit = last;
  }
  return id;
}

}  // namespace apiwarden::identity
