// apiwarden-agent: captures API calls per workload in the kernel and writes them as records.
#include "agent/agent.h"
#include "apiwarden/common/log.h"

#include <CLI/CLI.hpp>

int main(int argc, char** argv) {
  apiwarden::AgentOptions options;
  std::string log_level = "info";

  CLI::App app{"apiwarden-agent: per-workload API call capture"};
  app.add_option("--records", options.records_path, "JSON Lines output file, '-' for stdout")
      ->capture_default_str();
  app.add_option("--cgroup-root", options.cgroup_root,
                 "cgroup v2 directory whose subtree is monitored (default: the whole hierarchy)");
  app.add_option("--metrics-listen", options.metrics_listen, "serve Prometheus metrics on HOST:PORT");
  app.add_option("--state-dir", options.state_dir, "directory for the agent's state (credential key)")
      ->capture_default_str();
  app.add_option("--credential-key-file", options.credential_key_file,
                 "cluster-wide credential fingerprint key (e.g. a mounted Secret); default: generated in --state-dir");
  app.add_option("--kubeconfig", options.kubeconfig,
                 "read pod metadata through this kubeconfig (default: in-cluster config when in a pod)");
  app.add_option("--node-name", options.node_name, "node whose pods are watched (default: $NODE_NAME, host name)");
  app.add_option("--trust-domain", options.trust_domain, "SPIFFE trust domain")->capture_default_str();
  app.add_option("--cluster-cidr", options.cluster_cidrs,
                 "a pod, service or node network (repeatable): peers there are tagged \"cluster\"");
  app.add_option("--alerts", options.alerts_path, "write alerts as JSON Lines here ('-' for stdout); off if unset");
  app.add_option("--detect-config", options.detect_config,
                 "YAML: which workload owns which credential, and alerts to suppress (see README)");
  double learning_s = 300, alert_window_s = 600;
  app.add_option("--learning-period", learning_s, "seconds of traffic before behavioural detectors alert")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 30.0 * 86400));
  app.add_option("--alert-window", alert_window_s, "seconds within which repeats of one alert are counted, not written")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--jwt-max-lifetime", options.detect.jwt_max_lifetime_s,
                 "seconds a JWT may live (exp - iat) before stale_credential flags it")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{60}, int64_t{10} * 365 * 86400));
  double static_max_age_days = 90;
  app.add_option("--static-key-max-age", static_max_age_days,
                 "days a static API key, Basic or opaque bearer credential may stay in use before it is stale")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 3650.0));
  app.add_flag("--tls-plaintext,!--no-tls-plaintext", options.tls_plaintext,
               "read HTTPS in plaintext through uprobes on OpenSSL's SSL_write/SSL_read")
      ->capture_default_str();
  app.add_option("--enforce", options.enforce,
                 "cut workloads and refuse credentials in the kernel: off, monitor (count what would be refused) or "
                 "enforce; needs --cgroup-root below the hierarchy's root")
      ->capture_default_str()
      ->check(CLI::IsMember({"off", "monitor", "enforce"}));
  app.add_option("--enforce-pin-dir", options.enforce_pin_dir, "bpffs directory for the enforcement maps and links")
      ->capture_default_str();
  app.add_option("--enforce-default-ttl", options.enforce_default_ttl_s,
                 "seconds an enforcement rule lasts when apiwardenctl gives no --ttl (--permanent for none)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{10} * 365 * 86400));
  app.add_option("--enforce-config", options.enforce_config,
                 "YAML: auto-response policies (detector + minimum severity -> cut or revoke for a TTL); none if unset");
  app.add_option("--control-socket", options.control_socket, "Unix socket apiwardenctl talks to")
      ->capture_default_str();
  app.add_option("--control-group", options.control_group, "a group whose members may use the control socket");
  app.add_option("--ringbuf-mib", options.ringbuf_mib, "ring buffer size in MiB (power of two)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1024u));
  app.add_option("--drain-interval-us", options.drain_interval_us, "ring buffer drain period")
      ->capture_default_str()
      ->check(CLI::Range(50u, 100000u));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical, off")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  options.detect.learning_ns = static_cast<uint64_t>(learning_s * 1e9);
  options.detect.alert_window_ns = static_cast<uint64_t>(alert_window_s * 1e9);
  options.detect.static_max_age_ns = static_cast<uint64_t>(static_max_age_days * 86400 * 1e9);

  if ((options.ringbuf_mib & (options.ringbuf_mib - 1)) != 0) {
    fmt::print(stderr, "apiwarden-agent: --ringbuf-mib must be a power of two, got {}\n", options.ringbuf_mib);
    return 2;
  }
  if (!apiwarden::setLogLevel(log_level)) {
    fmt::print(stderr, "apiwarden-agent: unknown --log-level {}\n", log_level);
    return 2;
  }
  auto result = apiwarden::runAgent(options);
  if (!result) {
    apiwarden::logger("agent")->critical("{}", result.error().describe());
    return 1;
  }
  return 0;
}
