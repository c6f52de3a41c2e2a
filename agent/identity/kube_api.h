// Pod metadata from the Kubernetes API: a node-scoped list+watch of pods (fieldSelector
// spec.nodeName), resumed from the last resourceVersion after disconnects, relisted on 410 Gone,
// kept in a cache that the event path reads without waiting on the network.
#pragma once

#include "apiwarden/common/result.h"

#include <nlohmann/json_fwd.hpp>

#include <atomic>
#include <map>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace apiwarden::identity {

struct KubeApiConfig {
  std::string server;      // "https://10.96.0.1:443"
  std::string ca_pem;      // trusted CA bundle (PEM); empty: the system store
  std::string token;       // static bearer token (kubeconfig)
  std::string token_file;  // re-read at every connect: projected tokens rotate
  std::string client_cert_pem, client_key_pem;

  // From KUBERNETES_SERVICE_HOST/PORT and the service-account token and CA.
  static Result<KubeApiConfig> inCluster();
  // From a kubeconfig's current context: server, CA (file or data), token or client cert/key.
  static Result<KubeApiConfig> fromKubeconfig(const std::string& path);
};

struct PodInfo {
  std::string uid, name, ns, service_account, node;
  std::string owner_kind, owner_name;  // the controller: a Deployment rather than its ReplicaSet
  std::map<std::string, std::string> labels;
  std::vector<std::string> ips;  // status.podIPs (or podIP): the pod's own addresses
  std::string resource_version;
};

// A pod object of the API's JSON -> PodInfo; nullopt when it is not a pod with a uid.
std::optional<PodInfo> parsePod(const nlohmann::json& object);

class PodCache {
 public:
  std::optional<PodInfo> find(const std::string& uid) const;
  std::vector<PodInfo> all() const;
  void replaceAll(std::vector<PodInfo> pods);
  void upsert(PodInfo pod);
  void erase(const std::string& uid);
  size_t size() const;

 private:
  mutable std::shared_mutex mutex_;
  std::unordered_map<std::string, PodInfo> pods_;
};

struct PodWatcherStats {
  std::atomic<uint64_t> lists{0}, watches{0}, events{0}, relists_gone{0}, errors{0};
};

class PodWatcher {
 public:
  PodWatcher(KubeApiConfig config, std::string node_name, PodCache& cache);
  ~PodWatcher();  // stops the thread

  void start();
  const PodWatcherStats& stats() const { return stats_; }

 private:
  enum class WatchEnd { kDisconnected, kGone, kStopped };

  void run();
  Result<std::string> list();  // returns the list's resourceVersion
  WatchEnd watch(std::string& resource_version);
  bool applyEvent(const std::string& line, std::string& resource_version);  // false on 410 Gone
  std::string podsUrl(const std::string& extra) const;
  std::string bearer() const;

  KubeApiConfig config_;
  std::string node_name_;
  PodCache& cache_;
  PodWatcherStats stats_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace apiwarden::identity
