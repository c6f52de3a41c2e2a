// apiwardenctl: asks the agent, over its control socket, to cut a workload off, revoke or bind a
// credential, restore a rule, and shows its rules and status. One JSON request, one JSON answer.
// Exit status: 0 done, 1 the agent answered with an error, 2 usage error or no answer.
#include "agent/control/duration.h"

#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

using nlohmann::json;

constexpr int kExitOk = 0;
constexpr int kExitRefused = 1;  // the agent answered {"ok":false}
constexpr int kExitUsage = 2;    // bad arguments, no agent, no answer
constexpr auto kAnswerTimeout = std::chrono::seconds(10);
constexpr size_t kMaxAnswerBytes = size_t{64} << 20;

// Fields every rule-making command shares.
struct RuleFlags {
  std::string ttl;
  bool permanent = false;
  std::string reason;
  bool dry_run = false;
  std::string actor;
};

void addRuleFlags(CLI::App* command, RuleFlags& flags) {
  auto* ttl = command->add_option("--ttl", flags.ttl,
                                  "how long the rule lasts: 90s, 15m, 2h, 1d or seconds "
                                  "(default: the agent's)");
  command->add_flag("--permanent", flags.permanent, "the rule lasts until restored")->excludes(ttl);
  command->add_option("--reason", flags.reason, "why, kept with the rule");
  command->add_flag("--dry-run", flags.dry_run, "count what the rule would block without blocking it");
  command->add_option("--by", flags.actor, "who asks (default: $SUDO_USER, $USER, uid)");
}

std::string defaultActor() {
  for (const char* name : {"SUDO_USER", "USER"}) {
    if (const char* value = std::getenv(name); value && *value) return value;
  }
  return "uid " + std::to_string(getuid());
}

// Adds ttl_s (only when given: otherwise the agent's default applies), permanent, reason, dry_run, actor.
apiwarden::Result<void> addRuleFields(json& request, const RuleFlags& flags) {
  if (!flags.ttl.empty()) {
    auto seconds = apiwarden::control::parseDuration(flags.ttl);
    if (!seconds) return std::unexpected(seconds.error());
    request["ttl_s"] = *seconds;
  }
  request["permanent"] = flags.permanent;
  request["reason"] = flags.reason;
  request["dry_run"] = flags.dry_run;
  request["actor"] = flags.actor.empty() ? defaultActor() : flags.actor;
  return {};
}

// Connects, sends one line and reads one line back within kAnswerTimeout.
// The error message says what failed; its code is the errno.
apiwarden::Result<std::string> askAgent(const std::string& path, const std::string& line) {
  sockaddr_un address{};
  if (path.size() >= sizeof(address.sun_path)) return apiwarden::fail(ENAMETOOLONG, "cannot connect to " + path);
  address.sun_family = AF_UNIX;
  path.copy(address.sun_path, path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return apiwarden::fail(errno, "socket");
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  timeval timeout{static_cast<time_t>(kAnswerTimeout.count()), 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));  // bounds connect() and send()
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    return apiwarden::fail(errno, "cannot connect to " + path);
  }
  for (size_t sent = 0; sent < line.size();) {
    ssize_t n = send(fd, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return apiwarden::fail(errno, "sending the request to " + path);
    sent += static_cast<size_t>(n);
  }
  auto deadline = std::chrono::steady_clock::now() + kAnswerTimeout;
  std::string answer;
  char chunk[65536];
  while (answer.find('\n') == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd readable{fd, POLLIN, 0};
    int ready = left.count() > 0 ? poll(&readable, 1, static_cast<int>(left.count())) : 0;
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) return apiwarden::fail(0, "no answer from " + path + " within 10 s");
    ssize_t n = ready < 0 ? -1 : recv(fd, chunk, sizeof(chunk), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return apiwarden::fail(errno, "reading the answer from " + path);
    if (n == 0) return apiwarden::fail(0, "the agent closed the connection without answering");
    answer.append(chunk, static_cast<size_t>(n));
    if (answer.size() > kMaxAnswerBytes) return apiwarden::fail(0, "the agent's answer is too long");
  }
  answer.resize(answer.find('\n'));
  return answer;
}

std::string text(const json& value) { return value.is_string() ? value.get<std::string>() : value.dump(); }

std::string formatTime(const json& value) {
  if (!value.is_number()) return text(value);
  time_t seconds = value.get<time_t>();
  tm utc{};
  char out[32];
  if (!gmtime_r(&seconds, &utc) || !std::strftime(out, sizeof(out), "%Y-%m-%dT%H:%M:%SZ", &utc)) return text(value);
  return out;
}

// "r3 cut enforce cgroup:/x egress to 10.0.0.0/8 expires 2026-12-06T05:00:00Z reason "..." by ann drops=4"
std::string describeRule(const json& rule) {
  std::vector<std::string> parts;
  for (const char* key : {"id", "action", "mode", "fingerprint", "workload", "direction"}) {
    if (rule.contains(key) && !rule[key].is_null()) parts.push_back(text(rule[key]));
  }
  if (rule.contains("destinations") && rule["destinations"].is_array() && !rule["destinations"].empty()) {
    std::vector<std::string> destinations;
    for (const auto& destination : rule["destinations"]) destinations.push_back(text(destination));
    parts.push_back("to " + fmt::format("{}", fmt::join(destinations, ",")));
  }
  if (rule.contains("expires")) {
    parts.push_back(rule["expires"].is_null() ? "permanent" : "expires " + formatTime(rule["expires"]));
  }
  if (rule.contains("reason") && rule["reason"].is_string() && !rule["reason"].get<std::string>().empty()) {
    parts.push_back("reason " + rule["reason"].dump());
  }
  if (rule.contains("actor") && !rule["actor"].is_null()) parts.push_back("by " + text(rule["actor"]));
  if (rule.contains("counters") && rule["counters"].is_object()) {
    for (const auto& [name, value] : rule["counters"].items()) parts.push_back(name + "=" + text(value));
  }
  return fmt::format("{}", fmt::join(parts, " "));
}

// "key: value", nested objects as "outer.inner: value".
void printStatus(const json& status, const std::string& prefix = "") {
  for (const auto& [key, value] : status.items()) {
    if (value.is_object()) {
      printStatus(value, prefix + key + ".");
    } else {
      fmt::print("{}{}: {}\n", prefix, key, text(value));
    }
  }
}

void printAnswer(const std::string& op, const json& request, const json& answer) {
  if (op == "list") {
    if (!answer.contains("rules") || answer["rules"].empty()) return fmt::print("no rules\n");
    for (const auto& rule : answer["rules"]) fmt::print("{}\n", describeRule(rule));
  } else if (op == "status") {
    if (answer.contains("status") && answer["status"].is_object()) printStatus(answer["status"]);
  } else if (op == "restore") {
    const json& rule = answer.value("rule", json::object());
    fmt::print("restored {}\n", text(rule.contains("id") ? rule["id"] : request["id"]));
  } else if (answer.contains("rule") && answer["rule"].is_object()) {
    fmt::print("{}\n", describeRule(answer["rule"]));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path = "/run/apiwarden/control.sock";
  bool raw_json = false;
  RuleFlags flags;
  std::string workload, direction = "egress", fingerprint, rule_id;
  std::vector<std::string> destinations;

  CLI::App app{"apiwardenctl: enforcement commands for a running apiwarden-agent"};
  app.add_option("--socket", socket_path, "the agent's control socket")->capture_default_str();
  app.add_flag("--json", raw_json, "print the agent's answer as JSON");
  app.require_subcommand(1);

  auto* cut = app.add_subcommand("cut", "block a workload's traffic");
  cut->add_option("workload", workload, "the workload (as the agent names it)")->required();
  cut->add_option("--direction", direction, "egress, ingress or both")
      ->capture_default_str()
      ->check(CLI::IsMember({"egress", "ingress", "both"}));
  cut->add_option("--to", destinations, "only traffic to this destination (repeatable; default: all)")
      ->allow_extra_args(false);  // "--to a WORKLOAD" leaves WORKLOAD positional
  addRuleFlags(cut, flags);

  auto* revoke = app.add_subcommand("revoke", "block every request carrying a credential");
  revoke->add_option("fingerprint", fingerprint, "the credential's fingerprint")->required();
  addRuleFlags(revoke, flags);

  auto* bind = app.add_subcommand("bind", "allow a credential only from one workload");
  bind->add_option("fingerprint", fingerprint, "the credential's fingerprint")->required();
  bind->add_option("workload", workload, "the only workload that may use it")->required();
  addRuleFlags(bind, flags);

  auto* restore = app.add_subcommand("restore", "remove a rule");
  restore->add_option("id", rule_id, "the rule's id, as list shows it (e.g. r7)")->required();
  restore->add_option("--by", flags.actor, "who asks (default: $SUDO_USER, $USER, uid)");
  app.add_subcommand("list", "show the rules in force");
  app.add_subcommand("status", "show the enforcement engine's state");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }

  const std::string op = app.get_subcommands().front()->get_name();
  json request{{"op", op}};
  if (op == "cut") {
    request["workload"] = workload;
    request["direction"] = direction;
    request["destinations"] = destinations;
  } else if (op == "revoke") {
    request["fingerprint"] = fingerprint;
  } else if (op == "bind") {
    request["fingerprint"] = fingerprint;
    request["workload"] = workload;
  } else if (op == "restore") {
    request["id"] = rule_id;
    request["actor"] = flags.actor.empty() ? defaultActor() : flags.actor;
  }
  if (op == "cut" || op == "revoke" || op == "bind") {
    if (auto added = addRuleFields(request, flags); !added) {
      fmt::print(stderr, "apiwardenctl: {}\n", added.error().message());
      return kExitUsage;
    }
  }

  auto line = askAgent(socket_path, request.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
  if (!line) {
    const auto& error = line.error();
    std::string message = error.message();
    if (error.code() != 0) message += std::string(": ") + std::strerror(error.code());
    if (error.code() == EACCES || error.code() == EPERM) {
      message += "; run as root or as a member of the agent's control group";
    } else if (error.code() == ENOENT || error.code() == ECONNREFUSED) {
      message += "; is the agent running with enforcement on?";
    }
    fmt::print(stderr, "apiwardenctl: {}\n", message);
    return kExitUsage;
  }
  json answer = json::parse(*line, nullptr, /*allow_exceptions=*/false);
  if (!answer.is_object() || !answer.contains("ok") || !answer["ok"].is_boolean()) {
    fmt::print(stderr, "apiwardenctl: unexpected answer from the agent: {}\n", *line);
    return kExitUsage;
  }
  if (raw_json) fmt::print("{}\n", *line);
  if (!answer["ok"].get<bool>()) {
    fmt::print(stderr, "apiwardenctl: {}\n", text(answer.value("error", json("the agent refused without a reason"))));
    return kExitRefused;
  }
  if (!raw_json) printAnswer(op, request, answer);
  return kExitOk;
}
