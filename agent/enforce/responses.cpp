#include "agent/enforce/responses.h"

#include "agent/control/duration.h"
#include "agent/detect/engine.h"
#include "apiwarden/common/state_file.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>

namespace apiwarden::enforce {
namespace {

std::string where(const YAML::Node& node) { return "line " + std::to_string(node.Mark().line + 1); }

Result<detect::Severity> severity(const std::string& text, const YAML::Node& at) {
  for (auto s : {detect::Severity::kLow, detect::Severity::kMedium, detect::Severity::kHigh, detect::Severity::kCritical}) {
    if (text == detect::toString(s)) return s;
  }
  return fail(EINVAL, "min_severity at " + where(at) + " must be low, medium, high or critical, got " + text);
}

}  // namespace

Result<std::vector<ResponsePolicy>> parseResponses(const std::string& yaml) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    return fail(EINVAL, std::string("not YAML: ") + e.what());
  }
  std::vector<ResponsePolicy> policies;
  if (!root || root.IsNull()) return policies;
  if (!root.IsMap()) return fail(EINVAL, "the top level must be a map with responses");
  for (const auto& item : root) {
    if (item.first.as<std::string>() != "responses") {
      return fail(EINVAL, "unknown key \"" + item.first.as<std::string>() + "\" at " + where(item.first));
    }
  }
  YAML::Node list = root["responses"];
  if (!list.IsSequence()) return fail(EINVAL, "responses at " + where(list) + " must be a list");
  for (const YAML::Node& entry : list) {
    if (!entry.IsMap()) return fail(EINVAL, "responses entry at " + where(entry) + " must be a map");
    for (const auto& field : entry) {
      std::string key = field.first.as<std::string>();
      if (key != "detector" && key != "min_severity" && key != "action" && key != "ttl") {
        return fail(EINVAL, "unknown key \"" + key + "\" at " + where(field.first));
      }
      if (!field.second.IsScalar()) return fail(EINVAL, key + " at " + where(field.second) + " must be a string");
    }
    ResponsePolicy policy;
    policy.detector = entry["detector"] ? entry["detector"].as<std::string>() : "";
    if (std::find(detect::kDetectorIds.begin(), detect::kDetectorIds.end(), policy.detector) ==
        detect::kDetectorIds.end()) {
      return fail(EINVAL, "responses entry at " + where(entry) + ": unknown detector \"" + policy.detector + "\"");
    }
    if (entry["min_severity"]) {
      auto level = severity(entry["min_severity"].as<std::string>(), entry["min_severity"]);
      if (!level) return std::unexpected(level.error());
      policy.min_severity = *level;
    }
    policy.action = entry["action"] ? entry["action"].as<std::string>() : "";
    if (policy.action != "cut" && policy.action != "revoke") {
      return fail(EINVAL, "responses entry at " + where(entry) + ": action must be cut or revoke");
    }
    if (entry["ttl"]) {
      auto ttl = control::parseDuration(entry["ttl"].as<std::string>());
      if (!ttl) return std::unexpected(std::move(ttl.error()).context("ttl at " + where(entry["ttl"])));
      policy.ttl_s = static_cast<uint64_t>(*ttl);
    }
    policies.push_back(std::move(policy));
  }
  return policies;
}

Result<std::vector<ResponsePolicy>> loadResponses(const std::string& path) {
  return parseFile(path, [](const std::string& text) { return parseResponses(text); });
}

}  // namespace apiwarden::enforce
