// The agent's run loop: loads and attaches the capture programs, drains the ring buffer on a
// timer, runs the pipeline (decode -> connections -> records), serves metrics, and detaches on
// SIGINT/SIGTERM.
#pragma once

#include "agent/detect/engine.h"
#include "apiwarden/common/result.h"

#include <cstdint>
#include <string>
#include <vector>

namespace apiwarden {

struct AgentOptions {
  std::string records_path = "-";   // JSON Lines; "-" is stdout
  std::string cgroup_root;          // monitored cgroup v2 directory; empty: the whole hierarchy
  std::string metrics_listen;       // "host:port"; empty: no endpoint
  std::string state_dir = "/var/lib/apiwarden";  // the credential key (and later, baselines)
  std::string credential_key_file;  // cluster-wide key; empty: <state_dir>/credential.key
  std::string kubeconfig;           // Kubernetes API via a kubeconfig; empty: in-cluster if there, else none
  std::string node_name;            // the pods to watch; empty: $NODE_NAME, else the host name
  std::string trust_domain = "cluster.local";  // of SPIFFE IDs
  std::vector<std::string> cluster_cidrs;       // pod, service and node networks: peers there are "cluster"
  std::string alerts_path;           // JSON Lines alerts; empty: detection off
  std::string detect_config;         // credential owners and suppressions (YAML); empty: none
  detect::DetectOptions detect;
  bool tls_plaintext = true;        // read HTTPS in plaintext through OpenSSL uprobes
  std::string enforce = "off";      // "off", "monitor" or "enforce"
  std::string enforce_pin_dir = "/sys/fs/bpf/apiwarden";
  uint64_t enforce_default_ttl_s = 3600;
  std::string enforce_config;       // auto-response policies (YAML); empty: none
  std::string control_socket = "/run/apiwarden/control.sock";
  std::string control_group;        // a group allowed to use the control socket besides root
  uint32_t ringbuf_mib = 32;
  uint32_t drain_interval_us = 1000;
  uint32_t flush_interval_ms = 50;
  uint32_t stats_interval_ms = 1000;
};

// Runs until a signal arrives. Start-up failures come back as errors; run-time trouble is
// logged and counted.
Result<void> runAgent(const AgentOptions& options);

}  // namespace apiwarden
