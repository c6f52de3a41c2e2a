#include "agent/enforce/enforcer.h"

#include "agent/export/json_lines.h"
#include "apiwarden/common/log.h"
#include "apiwarden/common/state_file.h"

#include <time.h>

#include <algorithm>
#include <filesystem>

namespace apiwarden::enforce {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kStateKind = "apiwarden.enforcement";
constexpr int kStateVersion = 1;
constexpr int kMaxCgroupsPerRule = 64;

uint64_t bootNs() {
  timespec ts{};
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

// The level of a cgroup below the mount: "/a" is 1, "/a/b" is 2.
int levelOf(const std::string& relative_path) {
  return static_cast<int>(std::count(relative_path.begin(), relative_path.end(), '/'));
}

bool isFingerprint(const std::string& text) {
  return text.size() == 32 && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string optionalString(const json& request, const char* key) {
  auto it = request.find(key);
  return it != request.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Result<Direction> parseDirection(const std::string& text) {
  if (text.empty() || text == "egress") return Direction::kEgress;
  if (text == "ingress") return Direction::kIngress;
  if (text == "both") return Direction::kBoth;
  return fail(EINVAL, "unknown direction '" + text + "': egress, ingress or both");
}

json countersJson(const apiwarden_rule_counters& c) {
  return {{"connects", c.connects}, {"packets", c.packets}, {"aborted", c.aborted}, {"requests", c.requests}};
}

}  // namespace

std::string_view toString(Mode mode) { return mode == Mode::kEnforce ? "enforce" : "monitor"; }

std::string_view toString(Action action) {
  switch (action) {
    case Action::kCut:
      return "cut";
    case Action::kRevoke:
      return "revoke";
    case Action::kBind:
      return "bind";
  }
  return "unknown";
}

std::string_view toString(Refusal refusal) {
  switch (refusal) {
    case Refusal::kConnect:
      return "connect";
    case Refusal::kPacket:
      return "packet";
    case Refusal::kAbort:
      return "abort";
    case Refusal::kRequest:
      return "request";
  }
  return "unknown";
}

std::string_view toString(Direction direction) {
  switch (direction) {
    case Direction::kEgress:
      return "egress";
    case Direction::kIngress:
      return "ingress";
    case Direction::kBoth:
      return "both";
  }
  return "unknown";
}

Result<std::unique_ptr<Enforcer>> Enforcer::open(const EnforcerOptions& options, identity::WorkloadResolver& workloads,
                                                 const identity::PodCache* pods, detect::AlertLog* audit,
                                                 const Clock& clock) {
  if (fs::path(options.cgroup_root) == fs::path(options.cgroup_mount)) {
    return fail(EINVAL, "enforcement attaches below the cgroup hierarchy's root only: give --cgroup-root "
                        "(e.g. " + options.cgroup_mount + "/kubepods.slice)");
  }
  std::unique_ptr<Enforcer> enforcer(new Enforcer(options, workloads, pods, audit, clock));
  auto program = loader::EnforceProgram::open({options.cgroup_mount, options.cgroup_root, options.pin_dir});
  if (!program) return std::unexpected(std::move(program.error()).context("loading the enforcement programs"));
  enforcer->program_ = std::move(*program);
  auto config = enforcer->program_->config();
  if (!config) return std::unexpected(config.error());
  enforcer->hash_key_ = {config->hash_key[0], config->hash_key[1]};
  if (auto restored = enforcer->restoreState(); !restored) return std::unexpected(restored.error());
  logger("enforce")->info("enforcement on in {} mode: {} rules, pinned under {}{}", toString(options.mode),
                          enforcer->rules_.size(), options.pin_dir,
                          enforcer->program_->adopted() ? " (taken over from an earlier agent)" : "");
  return enforcer;
}

nlohmann::json Enforcer::handle(const json& request, const std::string& peer) {
  std::string op = optionalString(request, "op");
  std::string actor = optionalString(request, "actor");
  actor = actor.empty() ? peer : actor + " (" + peer + ")";
  Result<json> result = fail(EINVAL, "unknown op '" + op + "': cut, restore, revoke, bind, list or status");
  try {
    if (op == "cut") {
      result = cut(request, actor);
    } else if (op == "revoke") {
      result = credentialRule(request, actor, Action::kRevoke);
    } else if (op == "bind") {
      result = credentialRule(request, actor, Action::kBind);
    } else if (op == "restore") {
      result = restore(request, actor);
    } else if (op == "list") {
      json rules = json::array();
      for (const auto& [slot, rule] : rules_) rules.push_back(json(toJson(rule)));
      result = json{{"ok", true}, {"rules", rules}};
    } else if (op == "status") {
      result = json{{"ok", true}, {"status", status()}};
    }
  } catch (const json::exception& e) {
    result = fail(EINVAL, std::string("malformed request: ") + e.what());
  }
  ++stats_.control_requests;
  if (!result) {
    ++stats_.control_errors;
    logger("enforce")->warn("{} from {} refused: {}", op.empty() ? "request" : op, actor, result.error().message());
    return {{"ok", false}, {"error", result.error().message()}};
  }
  return *result;
}

// Workload names: cgroup:/path (or /path, below the cgroup mount), pod:<ns>/<name>,
// owner:<ns>/<Kind>/<name>, spiffe://..., unit:<systemd unit>. A name that is not a cgroup path
// is looked up among the cgroups under the enforced root; the outermost matches are returned.
Result<std::vector<std::pair<uint64_t, std::string>>> Enforcer::resolveWorkload(const std::string& name) {
  const fs::path root(options_.cgroup_root);
  std::vector<std::pair<uint64_t, std::string>> out;
  auto inside = [&](const fs::path& dir) {
    auto relative = dir.lexically_relative(root);
    return !relative.empty() && *relative.begin() != "..";
  };
  if (name.starts_with("cgroup:") || name.starts_with("/")) {
    std::string path = name.starts_with("cgroup:") ? name.substr(7) : name;
    fs::path dir = path.starts_with(options_.cgroup_mount + "/") ? fs::path(path) : fs::path(options_.cgroup_mount + path);
    std::error_code ec;
    dir = fs::canonical(dir, ec);
    if (ec || !fs::is_directory(dir)) return fail(ENOENT, "unknown workload '" + name + "': no such cgroup");
    if (!inside(dir)) {
      return fail(EINVAL, "workload '" + name + "' is outside the enforced cgroup subtree " + options_.cgroup_root);
    }
    auto id = identity::CgroupResolver::idOf(dir);
    if (!id) return std::unexpected(id.error());
    out.emplace_back(*id, dir.string().substr(options_.cgroup_mount.size()));
    return out;
  }
  auto matches = [&name](const records::Workload& w) -> bool {
    if (name.starts_with("pod:")) return !w.pod.empty() && name == "pod:" + w.ns + "/" + w.pod;
    if (name.starts_with("owner:")) return !w.owner.empty() && name == "owner:" + w.ns + "/" + w.owner;
    if (name.starts_with("spiffe://")) return name == w.spiffe_id;
    if (name.starts_with("unit:")) return !w.systemd_unit.empty() && name == "unit:" + w.systemd_unit;
    return false;
  };
  if (!name.starts_with("pod:") && !name.starts_with("owner:") && !name.starts_with("spiffe://") &&
      !name.starts_with("unit:")) {
    return fail(EINVAL, "unknown workload name '" + name +
                            "': use cgroup:/path, pod:<ns>/<name>, owner:<ns>/<Kind>/<name>, spiffe://... or unit:<name>");
  }
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_directory() || it.depth() > APIWARDEN_ENFORCE_MAX_LEVEL) {
      it.disable_recursion_pending();
      continue;
    }
    auto id = identity::CgroupResolver::idOf(it->path());
    if (!id || !matches(workloads_.describe(*id))) continue;
    out.emplace_back(*id, it->path().string().substr(options_.cgroup_mount.size()));
    it.disable_recursion_pending();  // the rule covers what is below
    if (out.size() > kMaxCgroupsPerRule) return fail(E2BIG, "workload '" + name + "' spans too many cgroups");
  }
  if (out.empty()) {
    return fail(ENOENT, "unknown workload '" + name + "': no cgroup under " + options_.cgroup_root + " belongs to it");
  }
  return out;
}

// A destination: an address or CIDR (destination.h), or a workload (pod:<ns>/<name>,
// owner:<ns>/<Kind>/<name>, spiffe://...) that stands for its pods' own addresses, every port,
// as the Kubernetes API knows them when the rule is made.
Result<std::vector<Destination>> Enforcer::resolveDestination(const std::string& text) const {
  if (!text.starts_with("pod:") && !text.starts_with("owner:") && !text.starts_with("spiffe://")) {
    auto dest = parseDestination(text);
    if (!dest) return std::unexpected(dest.error());
    return std::vector<Destination>{*dest};
  }
  if (!pods_) return fail(EINVAL, "destination '" + text + "' names a workload, but the agent has no Kubernetes API");
  std::vector<Destination> out;
  for (const auto& pod : pods_->all()) {
    bool match = text == "pod:" + pod.ns + "/" + pod.name ||
                 (!pod.owner_kind.empty() && text == "owner:" + pod.ns + "/" + pod.owner_kind + "/" + pod.owner_name) ||
                 text == "spiffe://" + options_.trust_domain + "/ns/" + pod.ns + "/sa/" + pod.service_account;
    if (!match) continue;
    for (const auto& ip : pod.ips) {
      auto dest = parseDestination(ip);
      if (dest) out.push_back(*dest);
    }
  }
  if (out.empty()) {
    return fail(ENOENT, "destination '" + text + "': no pod of it with an address of its own is known "
                        "(unknown, not scheduled yet, or on the host network: give its address and port)");
  }
  return out;
}

// What every action takes: reason, who asked, expiry, mode.
Result<void> Enforcer::common(const json& request, const std::string& actor, Rule& rule) {
  rule.reason = optionalString(request, "reason");
  rule.actor = actor;
  rule.created_ns = clock_.realtimeNs();
  bool permanent = request.value("permanent", false);
  uint64_t ttl_s = options_.default_ttl_s;
  if (auto it = request.find("ttl_s"); it != request.end()) {
    if (!it->is_number_unsigned() || it->get<uint64_t>() == 0 || it->get<uint64_t>() > 10ULL * 365 * 86400) {
      return fail(EINVAL, "ttl_s must be a whole number of seconds between 1 and ten years");
    }
    if (permanent) return fail(EINVAL, "a rule is either permanent or has a ttl, not both");
    ttl_s = it->get<uint64_t>();
  }
  rule.expires_ns = permanent ? 0 : rule.created_ns + ttl_s * 1'000'000'000ULL;
  bool dry_run = request.value("dry_run", false);
  rule.mode = options_.mode == Mode::kMonitor || dry_run ? Mode::kMonitor : Mode::kEnforce;
  auto slot = freeSlot();
  if (!slot) return std::unexpected(slot.error());
  rule.slot = *slot;
  rule.id = "r" + std::to_string(*slot);
  return {};
}

Result<json> Enforcer::cut(const json& request, const std::string& actor) {
  Rule rule;
  rule.action = Action::kCut;
  rule.workload = optionalString(request, "workload");
  if (rule.workload.empty()) return fail(EINVAL, "cut needs a workload");
  auto direction = parseDirection(optionalString(request, "direction"));
  if (!direction) return std::unexpected(direction.error());
  rule.direction = *direction;
  for (const auto& item : request.value("destinations", json::array())) {
    if (!item.is_string()) return fail(EINVAL, "destinations must be strings");
    auto dests = resolveDestination(item.get<std::string>());
    if (!dests) return std::unexpected(dests.error());
    for (const auto& dest : *dests) {
      for (const auto& other : rule.destinations) {
        if ((covers(other, dest) || covers(dest, other)) && other.port != dest.port) {
          return fail(EINVAL, "conflicting destinations " + other.text + " and " + dest.text +
                                  ": overlapping ranges must name the same port (one rule per range)");
        }
      }
      rule.destinations.push_back(dest);
    }
  }
  if (!rule.destinations.empty() && rule.direction != Direction::kEgress) {
    return fail(EINVAL, "destinations apply to egress cuts only");
  }
  auto cgroups = resolveWorkload(rule.workload);
  if (!cgroups) return std::unexpected(cgroups.error());
  rule.cgroups = std::move(*cgroups);
  for (const auto& [slot, existing] : rules_) {
    if (existing.action != Action::kCut) continue;
    for (const auto& [id, path] : existing.cgroups) {
      for (const auto& [new_id, new_path] : rule.cgroups) {
        if (id == new_id) {
          return fail(EEXIST, "conflicting rule: " + existing.id + " already cuts " + path + " (" +
                                  existing.workload + "); restore it first");
        }
      }
    }
  }
  if (auto ok = common(request, actor, rule); !ok) return std::unexpected(ok.error());
  if (auto added = add(rule); !added) return std::unexpected(added.error());
  // New connects are refused from here on; now take down the connections already open.
  if (auto torn = program_->teardown(); !torn) logger("enforce")->warn("{}: {}", rule.id, torn.error().describe());
  auditRecord("cut", rule, actor);
  save();
  return json{{"ok", true}, {"rule", json(toJson(rule))}};
}

Result<json> Enforcer::credentialRule(const json& request, const std::string& actor, Action action) {
  Rule rule;
  rule.action = action;
  rule.fingerprint = optionalString(request, "fingerprint");
  if (!isFingerprint(rule.fingerprint)) {
    return fail(EINVAL, "malformed fingerprint '" + rule.fingerprint.substr(0, 64) +
                            "': 32 lowercase hex characters, as in records and alerts");
  }
  auto hash = token_hashes_.find(rule.fingerprint);
  if (hash == token_hashes_.end()) {
    return fail(ENOENT, "fingerprint " + rule.fingerprint +
                            " has not been seen in a request header on this node since the agent started: the kernel "
                            "matches a keyed hash of the token, which the agent computes when it sees one request "
                            "carrying it");
  }
  rule.token_hash = hash->second;
  if (action == Action::kBind) {
    rule.workload = optionalString(request, "workload");
    if (rule.workload.empty()) return fail(EINVAL, "bind needs the workload that owns the credential");
    auto cgroups = resolveWorkload(rule.workload);
    if (!cgroups) return std::unexpected(cgroups.error());
    if (cgroups->size() != 1) {
      return fail(EINVAL, "workload '" + rule.workload + "' spans " + std::to_string(cgroups->size()) +
                              " cgroups; bind names one (give its cgroup:/path)");
    }
    rule.cgroups = std::move(*cgroups);
  }
  for (const auto& [slot, existing] : rules_) {
    if (existing.action != Action::kCut && existing.token_hash == rule.token_hash) {
      return fail(EEXIST, "conflicting rule: " + existing.id + " already " + std::string(toString(existing.action)) +
                              "s this credential; restore it first");
    }
  }
  if (auto ok = common(request, actor, rule); !ok) return std::unexpected(ok.error());
  if (auto added = add(rule); !added) return std::unexpected(added.error());
  // Keep-alive connections opened before any credential rule existed are checked from now on too.
  if (auto joined = program_->joinSockhash(); !joined) logger("enforce")->warn("{}: {}", rule.id, joined.error().describe());
  auditRecord(std::string(toString(action)), rule, actor);
  save();
  return json{{"ok", true}, {"rule", json(toJson(rule))}};
}

Result<json> Enforcer::restore(const json& request, const std::string& actor) {
  std::string id = optionalString(request, "id");
  for (const auto& [slot, rule] : rules_) {
    if (rule.id != id) continue;
    json shown = json(toJson(rule));
    remove(slot, "restore", actor);
    return json{{"ok", true}, {"rule", shown}};
  }
  return fail(ENOENT, "unknown rule id '" + id + "' (apiwardenctl list shows them)");
}

Result<uint32_t> Enforcer::freeSlot() const {
  for (uint32_t slot = 1; slot < APIWARDEN_ENFORCE_MAX_RULES; ++slot) {
    if (!rules_.contains(slot)) return slot;
  }
  return fail(ENOSPC, "every rule slot is in use (" + std::to_string(APIWARDEN_ENFORCE_MAX_RULES - 1) + ")");
}

// A new rule: fresh counters, then into the table and the kernel; undone if the kernel refuses.
Result<void> Enforcer::add(const Rule& rule) {
  if (auto reset = program_->resetCounters(rule.slot); !reset) return reset;
  rules_[rule.slot] = rule;
  if (auto installed = install(rule); !installed) {
    rules_.erase(rule.slot);
    (void)uninstall(rule);
    return installed;
  }
  return {};
}

uint64_t Enforcer::bootDeadline(const Rule& rule) const {
  if (rule.expires_ns == 0) return 0;
  uint64_t now = clock_.realtimeNs();
  uint64_t left = rule.expires_ns > now ? rule.expires_ns - now : 1;
  return bootNs() + left;
}

namespace {

uint32_t ruleFlags(const Rule& rule) {
  uint32_t flags = rule.mode == Mode::kMonitor ? APIWARDEN_RULE_MONITOR : 0;
  if (rule.action == Action::kBind) flags |= APIWARDEN_RULE_BIND;
  if (rule.action != Action::kCut) return flags;
  if (rule.direction != Direction::kIngress) flags |= APIWARDEN_RULE_EGRESS;
  if (rule.direction != Direction::kEgress) flags |= APIWARDEN_RULE_INGRESS;
  if (!rule.destinations.empty()) flags |= APIWARDEN_RULE_DESTINATIONS;
  return flags;
}

}  // namespace

// Destinations before the rule that points to them, so no moment cuts more than asked.
Result<void> Enforcer::install(const Rule& rule) {
  uint64_t deadline = bootDeadline(rule);
  if (rule.action == Action::kCut) {
    for (const auto& [cgroup_id, path] : rule.cgroups) {
      for (const auto& dest : rule.destinations) {
        apiwarden_dest_key key{static_cast<uint32_t>(32 + 64 + dest.prefix), 0, cgroup_id, {}};
        std::copy(dest.addr.begin(), dest.addr.end(), key.addr);
        if (auto put = program_->putDestination(key, {dest.port, 0, rule.slot}); !put) return put;
      }
      if (auto put = program_->putCut(cgroup_id, {deadline, rule.slot, ruleFlags(rule)}); !put) return put;
    }
  } else if (!rule.waiting()) {
    apiwarden_cred_rule value{deadline, 0, 0, rule.slot, ruleFlags(rule), 0};
    if (!rule.cgroups.empty()) {
      value.owner_cgroup = rule.cgroups.front().first;
      value.owner_level = static_cast<uint32_t>(levelOf(rule.cgroups.front().second));
    }
    if (auto put = program_->putCredential(rule.token_hash, value); !put) return put;
  }
  return syncConfig();
}

Result<void> Enforcer::uninstall(const Rule& rule) {
  Result<void> result;
  if (rule.action == Action::kCut) {
    for (const auto& [cgroup_id, path] : rule.cgroups) {
      if (auto deleted = program_->deleteCut(cgroup_id); !deleted) result = deleted;
      for (const auto& dest : rule.destinations) {
        apiwarden_dest_key key{static_cast<uint32_t>(32 + 64 + dest.prefix), 0, cgroup_id, {}};
        std::copy(dest.addr.begin(), dest.addr.end(), key.addr);
        if (auto deleted = program_->deleteDestination(key); !deleted) result = deleted;
      }
    }
  } else if (!rule.waiting()) {
    if (auto deleted = program_->deleteCredential(rule.token_hash); !deleted) result = deleted;
  }
  if (auto synced = syncConfig(); !synced) result = synced;
  return result;
}

// The levels the cut rules name, and whether any credential rule exists: what the kernel reads
// first, so that with no rules it does nothing else. Also counts the rules waiting for their credential.
Result<void> Enforcer::syncConfig() {
  auto config = program_->config();
  if (!config) return std::unexpected(config.error());
  uint32_t levels = 0, credential_rules = 0;
  uint64_t filter = 0;
  waiting_ = 0;
  for (const auto& [slot, rule] : rules_) {
    if (rule.waiting()) {
      ++waiting_;  // nothing in the kernel
      continue;
    }
    if (rule.action != Action::kCut) {
      ++credential_rules;
      filter |= 1ULL << (rule.token_hash & 63);
      continue;
    }
    for (const auto& [id, path] : rule.cgroups) levels |= 1u << std::min(levelOf(path), APIWARDEN_ENFORCE_MAX_LEVEL - 1);
  }
  config->cut_levels = levels;
  config->cred_rules = credential_rules;
  config->cred_filter = filter;
  stats_.rules = rules_.size();
  return program_->setConfig(*config);
}

void Enforcer::remove(uint32_t slot, const std::string& event, const std::string& actor) {
  auto it = rules_.find(slot);
  if (it == rules_.end()) return;
  Rule rule = std::move(it->second);
  rules_.erase(it);
  if (auto removed = uninstall(rule); !removed) {
    logger("enforce")->error("{}: removing its kernel entries: {}", rule.id, removed.error().describe());
  }
  auditRecord(event, rule, actor);
  save();
}

void Enforcer::tick() {
  uint64_t now = clock_.realtimeNs();
  std::vector<uint32_t> expired;
  bool refused_requests = false;
  for (auto& [slot, rule] : rules_) {
    if (rule.expires_ns != 0 && rule.expires_ns <= now) {
      expired.push_back(slot);
      continue;
    }
    auto counters = program_->counters(rule.slot);
    if (!counters) continue;
    apiwarden_rule_counters delta{counters->connects - rule.reported.connects,
                                  counters->packets - rule.reported.packets,
                                  counters->aborted - rule.reported.aborted,
                                  counters->requests - rule.reported.requests};
    if (delta.connects + delta.packets + delta.aborted + delta.requests == 0) continue;
    rule.reported = *counters;
    refused_requests |= delta.requests > 0 && rule.mode == Mode::kEnforce;
    auto& totals = stats_.refused[static_cast<size_t>(rule.mode)];
    totals[static_cast<size_t>(Refusal::kConnect)] += delta.connects;
    totals[static_cast<size_t>(Refusal::kPacket)] += delta.packets;
    totals[static_cast<size_t>(Refusal::kAbort)] += delta.aborted;
    totals[static_cast<size_t>(Refusal::kRequest)] += delta.requests;
    if (!audit_) continue;
    bool monitor = rule.mode == Mode::kMonitor;
    detect::Alert alert;
    alert.detector = monitor ? "enforcement_would_block" : "enforcement_blocked";
    alert.severity = monitor ? detect::Severity::kLow : detect::Severity::kMedium;
    std::string target = rule.action == Action::kCut ? rule.workload : "credential " + rule.fingerprint;
    std::string what;
    for (auto [count, noun] : {std::pair<uint64_t, const char*>{delta.connects, " connects"},
                               {delta.requests, " requests"},
                               {delta.packets, " packets"},
                               {delta.aborted, " established connections"}}) {
      if (count != 0) what += (what.empty() ? "" : ", ") + std::to_string(count) + noun;
    }
    alert.summary = rule.id + " (" + std::string(toString(rule.action)) + " " + target + ") " +
                    (monitor ? "would have refused " : "refused ") + what;
    alert.identity = rule.workload;
    alert.fingerprint = rule.fingerprint;
    alert.evidence = {{"rule", rule.id}, {"mode", toString(rule.mode)}, {"since_last", countersJson(delta)},
                      {"total", countersJson(*counters)}};
    alert.dedupe_key = "enforcement:" + rule.id;
    alert.ts_ns = now;
    audit_->raise(alert);
  }
  for (uint32_t slot : expired) remove(slot, "expired", "apiwarden-agent (ttl)");
  // Server connections that received a refused credential are held mute by the kernel: reset them.
  if (refused_requests) {
    if (auto torn = program_->teardown(); !torn) logger("enforce")->warn("{}", torn.error().describe());
  }
}

void Enforcer::respond(const detect::Alert& alert) {
  for (const auto& policy : options_.responses) {
    if (policy.detector != alert.detector || alert.severity < policy.min_severity) continue;
    json request = {{"op", policy.action},
                    {"reason", "auto-response to " + alert.detector + ": " + alert.summary},
                    {"ttl_s", policy.ttl_s ? policy.ttl_s : options_.default_ttl_s}};
    if (policy.action == "cut") {
      if (!alert.workload || !alert.workload->cgroup_path) continue;
      request["workload"] = "cgroup:" + *alert.workload->cgroup_path;
    } else {
      if (alert.fingerprint.empty()) continue;
      request["fingerprint"] = alert.fingerprint;
    }
    json answer = handle(request, "apiwarden-agent (auto-response)");
    if (answer.value("ok", false)) {
      logger("enforce")->warn("auto-response to {} ({}): {} {}", alert.detector, alert.dedupe_key, policy.action,
                              answer["rule"].value("id", ""));
    }
  }
}

void Enforcer::noteCredential(const std::string& fingerprint, uint64_t token_hash) {
  if (token_hashes_.size() >= 100'000 && !token_hashes_.contains(fingerprint)) token_hashes_.clear();
  token_hashes_[fingerprint] = token_hash;
  if (waiting_ == 0) return;
  for (auto& [slot, rule] : rules_) {
    if (!rule.waiting() || rule.fingerprint != fingerprint) continue;
    rule.token_hash = token_hash;
    if (auto installed = install(rule); !installed) {
      logger("enforce")->error("{}: installing it: {}", rule.id, installed.error().describe());
      rule.token_hash = 0;  // still waiting: the next request carrying it tries again
      continue;
    }
    logger("enforce")->info("{}: its credential was seen: enforced again", rule.id);
    save();
  }
}

json Enforcer::status() const {
  json refused = json::object(), would = json::object();
  for (size_t kind = 0; kind < kRefusalCount; ++kind) {
    std::string name(toString(static_cast<Refusal>(kind)));
    refused[name] = stats_.refused[static_cast<size_t>(Mode::kEnforce)][kind];
    would[name] = stats_.refused[static_cast<size_t>(Mode::kMonitor)][kind];
  }
  return {{"mode", toString(options_.mode)},
          {"cgroup_root", options_.cgroup_root},
          {"pin_dir", options_.pin_dir},
          {"pinned_objects", program_->pinnedObjects()},
          {"adopted_pins", program_->adopted()},
          {"rules", rules_.size()},
          {"refused", refused},
          {"would_refuse", would},
          {"credentials_known", token_hashes_.size()}};
}

nlohmann::ordered_json Enforcer::toJson(const Rule& rule) const {
  nlohmann::ordered_json out = {{"id", rule.id}, {"action", toString(rule.action)}, {"mode", toString(rule.mode)}};
  if (!rule.workload.empty()) out["workload"] = rule.workload;
  if (!rule.cgroups.empty()) {
    json paths = json::array();
    for (const auto& [id, path] : rule.cgroups) paths.push_back(path);
    out["cgroups"] = paths;
  }
  if (rule.action == Action::kCut) {
    out["direction"] = toString(rule.direction);
    json dests = json::array();
    for (const auto& d : rule.destinations) dests.push_back(d.text);
    out["destinations"] = dests;
  }
  if (!rule.fingerprint.empty()) out["fingerprint"] = rule.fingerprint;
  if (rule.waiting()) {
    out["waiting"] = "for a request carrying the credential: the kernel's hash changed with this agent version";
  }
  out["reason"] = rule.reason;
  out["actor"] = rule.actor;
  out["created"] = records::formatTimestamp(rule.created_ns);
  out["expires"] = rule.expires_ns ? json(records::formatTimestamp(rule.expires_ns)) : json(nullptr);
  auto counters = program_->counters(rule.slot);
  out["counters"] = countersJson(counters ? *counters : rule.reported);
  return out;
}

void Enforcer::auditRecord(const std::string& event, const Rule& rule, const std::string& actor) {
  nlohmann::ordered_json record = {{"ts", records::formatTimestamp(clock_.realtimeNs())},
                                   {"type", "audit"},
                                   {"event", event},
                                   {"actor", actor},
                                   {"rule", json(toJson(rule))}};
  logger("enforce")->info("audit: {} {} by {}", event, rule.id, actor);
  if (audit_) audit_->write(record);
}

// Rule metadata on disk; the kernel's pinned maps hold the rules themselves.
void Enforcer::save() const {
  if (options_.state_path.empty()) return;
  json rules = json::array();
  for (const auto& [slot, rule] : rules_) {
    json cgroups = json::array();
    for (const auto& [id, path] : rule.cgroups) cgroups.push_back({{"id", id}, {"path", path}});
    json dests = json::array();
    for (const auto& d : rule.destinations) dests.push_back(d.text);
    rules.push_back({{"slot", rule.slot},
                     {"action", toString(rule.action)},
                     {"mode", toString(rule.mode)},
                     {"workload", rule.workload},
                     {"cgroups", cgroups},
                     {"direction", toString(rule.direction)},
                     {"destinations", dests},
                     {"fingerprint", rule.fingerprint},
                     {"token_hash", rule.token_hash},
                     {"reason", rule.reason},
                     {"actor", rule.actor},
                     {"created_ns", rule.created_ns},
                     {"expires_ns", rule.expires_ns},
                     {"reported", countersJson(rule.reported)}});
  }
  json file = {{"kind", kStateKind}, {"version", kStateVersion}, {"rules", rules}};
  if (auto written = writeFileAtomically(options_.state_path, file.dump()); !written) {
    logger("enforce")->error("saving rules: {}", written.error().describe());
  }
}

namespace {

Rule ruleFromJson(const json& j) {
  Rule rule;
  rule.slot = j.at("slot").get<uint32_t>();
  if (rule.slot == 0 || rule.slot >= APIWARDEN_ENFORCE_MAX_RULES) throw std::out_of_range("rule slot out of range");
  rule.id = "r" + std::to_string(rule.slot);
  std::string action = j.at("action").get<std::string>();
  rule.action = action == "cut" ? Action::kCut : action == "revoke" ? Action::kRevoke : Action::kBind;
  if (action != "cut" && action != "revoke" && action != "bind") throw std::invalid_argument("unknown action " + action);
  rule.mode = j.at("mode").get<std::string>() == "enforce" ? Mode::kEnforce : Mode::kMonitor;
  rule.workload = j.at("workload").get<std::string>();
  for (const auto& c : j.at("cgroups")) rule.cgroups.emplace_back(c.at("id").get<uint64_t>(), c.at("path").get<std::string>());
  auto direction = parseDirection(j.at("direction").get<std::string>());
  if (!direction) throw std::invalid_argument(direction.error().message());
  rule.direction = *direction;
  for (const auto& d : j.at("destinations")) {
    auto dest = parseDestination(d.get<std::string>());
    if (!dest) throw std::invalid_argument(dest.error().message());
    rule.destinations.push_back(*dest);
  }
  rule.fingerprint = j.at("fingerprint").get<std::string>();
  rule.token_hash = j.at("token_hash").get<uint64_t>();
  rule.reason = j.at("reason").get<std::string>();
  rule.actor = j.at("actor").get<std::string>();
  rule.created_ns = j.at("created_ns").get<uint64_t>();
  rule.expires_ns = j.at("expires_ns").get<uint64_t>();
  const json& r = j.at("reported");
  rule.reported = {r.at("connects").get<uint64_t>(), r.at("packets").get<uint64_t>(), r.at("aborted").get<uint64_t>(),
                   r.at("requests").get<uint64_t>()};
  return rule;
}

}  // namespace

// Start-up: the saved rules are put back (the puts are idempotent, so rules a killed agent left
// in the pinned maps keep enforcing throughout), expired ones removed, and entries found in the
// maps without metadata adopted so `list` shows them and `restore` can undo them.
Result<void> Enforcer::restoreState() {
  auto log = logger("enforce");
  if (!options_.state_path.empty()) {
    if (auto text = readFile(options_.state_path)) {
      std::string problem;
      try {
        json file = json::parse(*text);
        if (file.value("kind", "") != kStateKind) {
          problem = "a foreign file";
        } else if (file.value("version", 0) != kStateVersion) {
          problem = "layout version " + std::to_string(file.value("version", 0)) + ", this agent reads " +
                    std::to_string(kStateVersion);
        } else {
          for (const auto& j : file.at("rules")) {
            Rule rule = ruleFromJson(j);
            rules_[rule.slot] = std::move(rule);
          }
        }
      } catch (const std::exception& e) {
        problem = std::string("unreadable: ") + e.what();
        rules_.clear();
      }
      if (!problem.empty()) {
        auto aside = setAside(options_.state_path);
        log->error("enforcement state {} rejected ({}){}; the pinned kernel rules are adopted without metadata",
                   options_.state_path, problem, aside ? "; moved to " + *aside : "");
      }
    }
  }
  if (program_->staleCredentialHashes()) {
    // An earlier version's kernel hash: its entries match nothing now, and the tokens behind them
    // are not kept. The rules wait for a request carrying their credential (noteCredential).
    auto stale = program_->credentials();
    if (!stale) return std::unexpected(stale.error());
    for (const auto& [hash, cred] : *stale) (void)program_->deleteCredential(hash);
    for (auto& [slot, rule] : rules_) {
      if (rule.action == Action::kCut) continue;
      rule.token_hash = 0;
      log->warn("{} ({} {}) waits for a request carrying the credential: the kernel's hash changed with this "
                "version, and it is enforced again once the agent has seen one",
                rule.id, toString(rule.action), rule.fingerprint);
    }
  }
  uint64_t now = clock_.realtimeNs();
  std::vector<uint32_t> expired;
  for (const auto& [slot, rule] : rules_) {
    if (rule.expires_ns != 0 && rule.expires_ns <= now) {
      expired.push_back(slot);
    } else if (auto installed = install(rule); !installed) {
      return std::unexpected(std::move(installed.error()).context("reinstalling " + rule.id));
    }
  }
  for (uint32_t slot : expired) remove(slot, "expired", "apiwarden-agent (ttl, while stopped)");

  // A kernel entry whose rule has no metadata (a lost or rejected state file) becomes a rule of its
  // own; a cut entry of a known cut rule's slot joins that rule (it enforces: it is listed and can be
  // restored). Only entries no rule can own are removed.
  auto adopt = [&](uint32_t slot, Action action, uint32_t flags) -> Rule* {
    if (slot == 0 || slot >= APIWARDEN_ENFORCE_MAX_RULES) return nullptr;
    auto [it, inserted] = rules_.try_emplace(slot);
    if (inserted) {
      Rule& rule = it->second;
      rule.slot = slot;
      rule.id = "r" + std::to_string(slot);
      rule.action = action;
      rule.mode = flags & APIWARDEN_RULE_MONITOR ? Mode::kMonitor : Mode::kEnforce;
      rule.reason = "found in the pinned maps without saved metadata";
      rule.actor = "unknown";
      log->warn("adopted {} ({}) from the pinned maps without metadata", rule.id, toString(action));
    }
    return it->second.action == action || (action != Action::kCut && it->second.action != Action::kCut)
               ? &it->second
               : nullptr;
  };
  auto cuts = program_->cuts();
  if (!cuts) return std::unexpected(cuts.error());
  for (const auto& [cgroup_id, cut] : *cuts) {
    Rule* rule = adopt(cut.rule_id, Action::kCut, cut.flags);
    if (!rule) {
      log->warn("removing a stray cut entry for cgroup id {} (rule id {})", cgroup_id, cut.rule_id);
      (void)program_->deleteCut(cgroup_id);
      continue;
    }
    bool known = std::any_of(rule->cgroups.begin(), rule->cgroups.end(),
                             [id = cgroup_id](const auto& c) { return c.first == id; });
    if (known) continue;
    auto path = workloads_.describe(cgroup_id).cgroup_path;
    if (rule->workload.empty()) {
      rule->workload = "cgroup:" + path.value_or("?");
      bool ingress = cut.flags & APIWARDEN_RULE_INGRESS, egress = cut.flags & APIWARDEN_RULE_EGRESS;
      rule->direction = ingress && egress ? Direction::kBoth : ingress ? Direction::kIngress : Direction::kEgress;
    }
    rule->cgroups.emplace_back(cgroup_id, path.value_or(""));
  }
  auto credentials = program_->credentials();
  if (!credentials) return std::unexpected(credentials.error());
  for (const auto& [hash, cred] : *credentials) {
    Rule* rule = adopt(cred.rule_id, cred.flags & APIWARDEN_RULE_BIND ? Action::kBind : Action::kRevoke, cred.flags);
    if (rule && (rule->token_hash == hash || rule->token_hash == 0)) {
      rule->token_hash = hash;
      continue;
    }
    log->warn("removing a stray credential entry (rule id {})", cred.rule_id);
    (void)program_->deleteCredential(hash);
  }
  if (auto synced = syncConfig(); !synced) return synced;
  save();
  return {};
}

}  // namespace apiwarden::enforce
