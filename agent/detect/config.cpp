#include "agent/detect/config.h"

#include "apiwarden/common/state_file.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <ctime>

namespace apiwarden::detect {
namespace {

std::string where(const YAML::Node& node) { return "line " + std::to_string(node.Mark().line + 1); }

Result<std::string> text(const YAML::Node& entry, const char* key) {
  YAML::Node value = entry[key];
  if (!value) return std::string();
  if (!value.IsScalar()) return fail(EINVAL, std::string(key) + " at " + where(value) + " must be a string");
  return value.as<std::string>();
}

// "2027-01-31T00:00:00Z" -> ns since the epoch.
Result<uint64_t> timestamp(const std::string& value, const YAML::Node& at) {
  std::tm tm{};
  const char* end = strptime(value.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (!end || *end != '\0') {
    return fail(EINVAL, "until at " + where(at) + " must be RFC 3339 UTC like 2027-01-31T00:00:00Z, got " + value);
  }
  return static_cast<uint64_t>(timegm(&tm)) * 1'000'000'000ULL;
}

}  // namespace

Result<DetectConfig> parseDetectConfig(const std::string& yaml) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    return fail(EINVAL, std::string("not YAML: ") + e.what());
  }
  DetectConfig config;
  if (!root || root.IsNull()) return config;
  if (!root.IsMap()) return fail(EINVAL, "the top level must be a map with credentials and suppressions");
  for (const auto& item : root) {
    std::string key = item.first.as<std::string>();
    if (key != "credentials" && key != "suppressions") {
      return fail(EINVAL, "unknown key \"" + key + "\" at " + where(item.first));
    }
    if (!item.second.IsSequence()) return fail(EINVAL, key + " at " + where(item.second) + " must be a list");
  }
  for (const YAML::Node& entry : root["credentials"]) {
    if (!entry.IsMap()) return fail(EINVAL, "credentials entry at " + where(entry) + " must be a map");
    CredentialOwner owner;
    for (auto [field, out] : {std::pair<const char*, std::string*>{"fingerprint", &owner.fingerprint},
                              {"jwt_sub", &owner.jwt_sub},
                              {"jwt_client_id", &owner.jwt_client_id},
                              {"owner", &owner.owner}}) {
      auto value = text(entry, field);
      if (!value) return std::unexpected(value.error());
      *out = *value;
    }
    int ways = !owner.fingerprint.empty() + !owner.jwt_sub.empty() + !owner.jwt_client_id.empty();
    if (ways != 1 || owner.owner.empty()) {
      return fail(EINVAL, "credentials entry at " + where(entry) +
                              " needs an owner and exactly one of fingerprint, jwt_sub, jwt_client_id");
    }
    config.owners.push_back(std::move(owner));
  }
  for (const YAML::Node& entry : root["suppressions"]) {
    if (!entry.IsMap()) return fail(EINVAL, "suppressions entry at " + where(entry) + " must be a map");
    Suppression suppression;
    for (auto [field, out] : {std::pair<const char*, std::string*>{"detector", &suppression.detector},
                              {"identity", &suppression.identity},
                              {"fingerprint", &suppression.fingerprint}}) {
      auto value = text(entry, field);
      if (!value) return std::unexpected(value.error());
      *out = *value;
    }
    if (suppression.detector.empty() && suppression.identity.empty() && suppression.fingerprint.empty()) {
      return fail(EINVAL, "suppressions entry at " + where(entry) +
                              " would silence everything: give a detector, "
                              "identity or fingerprint");
    }
    if (!suppression.detector.empty() &&
        std::find(kDetectorIds.begin(), kDetectorIds.end(), suppression.detector) == kDetectorIds.end()) {
      return fail(EINVAL, "unknown detector \"" + suppression.detector + "\" at " + where(entry));
    }
    auto until = text(entry, "until");
    if (!until) return std::unexpected(until.error());
    if (!until->empty()) {
      auto ns = timestamp(*until, entry["until"]);
      if (!ns) return std::unexpected(ns.error());
      suppression.until_ns = *ns;
    }
    config.suppressions.push_back(std::move(suppression));
  }
  return config;
}

Result<DetectConfig> loadDetectConfig(const std::string& path) {
  return parseFile(path, [](const std::string& text) { return parseDetectConfig(text); });
}

}  // namespace apiwarden::detect
