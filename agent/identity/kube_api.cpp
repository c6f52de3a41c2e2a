#include "agent/identity/kube_api.h"

#include "apiwarden/common/base64.h"
#include "apiwarden/common/log.h"
#include "apiwarden/common/state_file.h"

#include <curl/curl.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>

namespace apiwarden::identity {
namespace {

constexpr size_t kMaxLabels = 32;
constexpr size_t kMaxEventBytes = 8 << 20;
constexpr const char* kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

std::string str(const nlohmann::json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// A kubeconfig value given inline (base64 "-data") or as a file path.
Result<std::string> dataOrFile(const YAML::Node& node, const std::string& key) {
  if (node[key + "-data"]) {
    std::string decoded;
    if (!base64Decode(node[key + "-data"].as<std::string>(), decoded)) return fail(EINVAL, key + "-data is not base64");
    return decoded;
  }
  if (node[key]) return readFile(node[key].as<std::string>());
  return std::string();
}

YAML::Node named(const YAML::Node& list, const std::string& name, const char* field) {
  for (const auto& entry : list) {
    if (entry["name"] && entry["name"].as<std::string>() == name) return entry[field];
  }
  return YAML::Node();
}

// One HTTPS GET; on_data gets the body as it streams and returns false to abort.
struct HttpResult {
  long status = 0;
  CURLcode code = CURLE_OK;
};

HttpResult httpGet(const KubeApiConfig& config, const std::string& bearer, const std::string& url, bool streaming,
                   const std::atomic<bool>& stop, const std::function<bool(std::string_view)>& on_data) {
  struct Context {
    const std::function<bool(std::string_view)>* on_data;
    const std::atomic<bool>* stop;
  } ctx{&on_data, &stop};
  CURL* curl = curl_easy_init();
  curl_slist* headers = nullptr;
  if (!bearer.empty()) headers = curl_slist_append(headers, ("Authorization: Bearer " + bearer).c_str());
  headers = curl_slist_append(headers, "Accept: application/json");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
  if (streaming) {  // a silent watch is dead: the server sends bookmarks and ends watches itself
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 330L);
  } else {
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 60L);
  }
  curl_blob ca{const_cast<char*>(config.ca_pem.data()), config.ca_pem.size(), CURL_BLOB_COPY};
  if (!config.ca_pem.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO_BLOB, &ca);
  curl_blob cert{const_cast<char*>(config.client_cert_pem.data()), config.client_cert_pem.size(), CURL_BLOB_COPY};
  curl_blob key{const_cast<char*>(config.client_key_pem.data()), config.client_key_pem.size(), CURL_BLOB_COPY};
  if (!config.client_cert_pem.empty()) {
    curl_easy_setopt(curl, CURLOPT_SSLCERT_BLOB, &cert);
    curl_easy_setopt(curl, CURLOPT_SSLKEY_BLOB, &key);
  }
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &ctx);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, +[](char* data, size_t, size_t n, void* user) -> size_t {
    auto* c = static_cast<Context*>(user);
    return (*c->on_data)(std::string_view(data, n)) ? n : 0;
  });
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &ctx);
  curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION,
                   +[](void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) -> int {
                     return static_cast<Context*>(user)->stop->load() ? 1 : 0;
                   });
  HttpResult result;
  result.code = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &result.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return result;
}

std::string urlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      static constexpr char kHex[] = "0123456789ABCDEF";
      out += {'%', kHex[c >> 4], kHex[c & 15]};
    }
  }
  return out;
}

}  // namespace

Result<KubeApiConfig> KubeApiConfig::inCluster() {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (!host || !port) return fail(ENOENT, "not in a cluster: KUBERNETES_SERVICE_HOST/PORT are unset");
  KubeApiConfig config;
  std::string h = host;
  config.server = "https://" + (h.find(':') != std::string::npos ? "[" + h + "]" : h) + ":" + port;
  auto ca = readFile(std::string(kServiceAccountDir) + "/ca.crt");
  if (!ca) return std::unexpected(ca.error());
  config.ca_pem = *ca;
  config.token_file = std::string(kServiceAccountDir) + "/token";
  return config;
}

Result<KubeApiConfig> KubeApiConfig::fromKubeconfig(const std::string& path) {
  try {
    YAML::Node root = YAML::LoadFile(path);
    std::string context_name = root["current-context"].as<std::string>("");
    YAML::Node context = named(root["contexts"], context_name, "context");
    if (!context) return fail(EINVAL, path + ": current-context '" + context_name + "' not found");
    YAML::Node cluster = named(root["clusters"], context["cluster"].as<std::string>(""), "cluster");
    YAML::Node user = named(root["users"], context["user"].as<std::string>(""), "user");
    if (!cluster || !cluster["server"]) return fail(EINVAL, path + ": the context's cluster has no server");
    KubeApiConfig config;
    config.server = cluster["server"].as<std::string>();
    auto ca = dataOrFile(cluster, "certificate-authority");
    if (!ca) return std::unexpected(ca.error());
    config.ca_pem = *ca;
    if (user) {
      config.token = user["token"].as<std::string>("");
      config.token_file = user["tokenFile"].as<std::string>("");
      auto cert = dataOrFile(user, "client-certificate");
      auto key = dataOrFile(user, "client-key");
      if (!cert || !key) return std::unexpected(!cert ? cert.error() : key.error());
      config.client_cert_pem = *cert;
      config.client_key_pem = *key;
    }
    return config;
  } catch (const YAML::Exception& e) {
    return fail(EINVAL, path + ": " + e.what());
  }
}

std::optional<PodInfo> parsePod(const nlohmann::json& object) {
  if (!object.is_object()) return std::nullopt;
  auto metadata = object.value("metadata", nlohmann::json::object());
  auto spec = object.value("spec", nlohmann::json::object());
  if (!metadata.is_object() || !spec.is_object()) return std::nullopt;
  PodInfo pod;
  pod.uid = str(metadata, "uid");
  if (pod.uid.empty()) return std::nullopt;
  pod.name = str(metadata, "name");
  pod.ns = str(metadata, "namespace");
  pod.resource_version = str(metadata, "resourceVersion");
  pod.node = str(spec, "nodeName");
  pod.service_account = str(spec, "serviceAccountName");
  if (pod.service_account.empty()) pod.service_account = "default";
  if (auto labels = metadata.find("labels"); labels != metadata.end() && labels->is_object()) {
    for (auto it = labels->begin(); it != labels->end() && pod.labels.size() < kMaxLabels; ++it) {
      if (it->is_string()) pod.labels.emplace(it.key(), it->get<std::string>());
    }
  }
  if (auto owners = metadata.find("ownerReferences"); owners != metadata.end() && owners->is_array()) {
    for (const auto& owner : *owners) {
      if (!owner.is_object() || !owner.value("controller", false)) continue;
      pod.owner_kind = str(owner, "kind");
      pod.owner_name = str(owner, "name");
    }
  }
  auto status = object.value("status", nlohmann::json::object());
  bool host_network = spec.value("hostNetwork", false);  // then the addresses are the node's, not its own
  if (status.is_object() && !host_network) {
    if (auto ips = status.find("podIPs"); ips != status.end() && ips->is_array()) {
      for (const auto& ip : *ips) {
        if (ip.is_object() && pod.ips.size() < 4 && !str(ip, "ip").empty()) pod.ips.push_back(str(ip, "ip"));
      }
    }
    if (pod.ips.empty() && !str(status, "podIP").empty()) pod.ips.push_back(str(status, "podIP"));
  }
  // A ReplicaSet named <deployment>-<pod-template-hash> belongs to that Deployment.
  auto hash = pod.labels.find("pod-template-hash");
  if (pod.owner_kind == "ReplicaSet" && hash != pod.labels.end() && pod.owner_name.ends_with("-" + hash->second)) {
    pod.owner_kind = "Deployment";
    pod.owner_name.resize(pod.owner_name.size() - hash->second.size() - 1);
  }
  return pod;
}

std::vector<PodInfo> PodCache::all() const {
  std::shared_lock lock(mutex_);
  std::vector<PodInfo> out;
  out.reserve(pods_.size());
  for (const auto& [uid, pod] : pods_) out.push_back(pod);
  return out;
}

std::optional<PodInfo> PodCache::find(const std::string& uid) const {
  std::shared_lock lock(mutex_);
  auto it = pods_.find(uid);
  if (it == pods_.end()) return std::nullopt;
  return it->second;
}

void PodCache::replaceAll(std::vector<PodInfo> pods) {
  std::unordered_map<std::string, PodInfo> fresh;
  for (auto& pod : pods) fresh.emplace(pod.uid, std::move(pod));
  std::unique_lock lock(mutex_);
  pods_.swap(fresh);
}

void PodCache::upsert(PodInfo pod) {
  std::unique_lock lock(mutex_);
  pods_[pod.uid] = std::move(pod);
}

void PodCache::erase(const std::string& uid) {
  std::unique_lock lock(mutex_);
  pods_.erase(uid);
}

size_t PodCache::size() const {
  std::shared_lock lock(mutex_);
  return pods_.size();
}

PodWatcher::PodWatcher(KubeApiConfig config, std::string node_name, PodCache& cache)
    : config_(std::move(config)), node_name_(std::move(node_name)), cache_(cache) {}

PodWatcher::~PodWatcher() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void PodWatcher::start() { thread_ = std::thread([this] { run(); }); }

std::string PodWatcher::podsUrl(const std::string& extra) const {
  return config_.server + "/api/v1/pods?fieldSelector=" + urlEncode("spec.nodeName=" + node_name_) + extra;
}

std::string PodWatcher::bearer() const {
  if (config_.token_file.empty()) return config_.token;
  auto token = readFile(config_.token_file);
  if (!token) return config_.token;
  while (!token->empty() && (token->back() == '\n' || token->back() == '\r')) token->pop_back();
  return *token;
}

Result<std::string> PodWatcher::list() {
  ++stats_.lists;
  std::string body;
  auto result = httpGet(config_, bearer(), podsUrl(""), false, stop_, [&](std::string_view chunk) {
    body.append(chunk);
    return body.size() < (64u << 20);
  });
  if (result.code != CURLE_OK) return fail(EIO, std::string("listing pods: ") + curl_easy_strerror(result.code));
  if (result.status != 200) return fail(EIO, "listing pods: HTTP " + std::to_string(result.status));
  auto json = nlohmann::json::parse(body, nullptr, false);
  if (!json.is_object() || !json.contains("items") || !json["items"].is_array()) {
    return fail(EINVAL, "listing pods: not a PodList");
  }
  std::vector<PodInfo> pods;
  for (const auto& item : json["items"]) {
    if (auto pod = parsePod(item)) pods.push_back(std::move(*pod));
  }
  logger("kube")->info("listed {} pods on node {}", pods.size(), node_name_);
  cache_.replaceAll(std::move(pods));
  return str(json.value("metadata", nlohmann::json::object()), "resourceVersion");
}

bool PodWatcher::applyEvent(const std::string& line, std::string& resource_version) {
  auto event = nlohmann::json::parse(line, nullptr, false);
  if (!event.is_object()) return true;
  ++stats_.events;
  std::string type = str(event, "type");
  const auto& object = event.contains("object") ? event["object"] : nlohmann::json();
  if (type == "ERROR") {
    int code = object.is_object() ? object.value("code", 0) : 0;
    if (code == 410) return false;
    ++stats_.errors;
    return true;
  }
  if (object.is_object() && object.contains("metadata")) {
    std::string rv = str(object["metadata"], "resourceVersion");
    if (!rv.empty()) resource_version = rv;
  }
  if (type == "BOOKMARK") return true;
  auto pod = parsePod(object);
  if (!pod) return true;
  if (type == "DELETED") {
    cache_.erase(pod->uid);
  } else if (type == "ADDED" || type == "MODIFIED") {
    cache_.upsert(std::move(*pod));
  }
  return true;
}

PodWatcher::WatchEnd PodWatcher::watch(std::string& resource_version) {
  ++stats_.watches;
  std::string buffer;
  bool gone = false;
  auto result = httpGet(config_, bearer(),
                        podsUrl("&watch=1&allowWatchBookmarks=true&timeoutSeconds=290&resourceVersion=" +
                                urlEncode(resource_version)),
                        true, stop_, [&](std::string_view chunk) {
                          buffer.append(chunk);
                          for (size_t nl; (nl = buffer.find('\n')) != std::string::npos;) {
                            if (!applyEvent(buffer.substr(0, nl), resource_version)) {
                              gone = true;
                              return false;
                            }
                            buffer.erase(0, nl + 1);
                          }
                          return buffer.size() < kMaxEventBytes;
                        });
  if (stop_) return WatchEnd::kStopped;
  if (gone || result.status == 410) return WatchEnd::kGone;
  if (result.code != CURLE_OK && result.code != CURLE_PARTIAL_FILE) ++stats_.errors;
  return WatchEnd::kDisconnected;
}

void PodWatcher::run() {
  auto log = logger("kube");
  auto pause = [this](std::chrono::milliseconds total) {
    for (auto waited = std::chrono::milliseconds(0); waited < total && !stop_; waited += std::chrono::milliseconds(50)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  };
  std::chrono::milliseconds backoff(500);
  while (!stop_) {
    auto resource_version = list();
    if (!resource_version) {
      ++stats_.errors;
      log->warn("{}; retrying in {} ms", resource_version.error().describe(), backoff.count());
      pause(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
      continue;
    }
    backoff = std::chrono::milliseconds(500);
    std::string rv = *resource_version;
    while (!stop_) {
      WatchEnd end = watch(rv);
      if (end == WatchEnd::kStopped) return;
      if (end == WatchEnd::kGone) {
        ++stats_.relists_gone;
        log->info("watch resourceVersion {} is gone (410): relisting", rv);
        break;
      }
      pause(std::chrono::milliseconds(200));  // resume from the last resourceVersion seen
    }
  }
}

}  // namespace apiwarden::identity
