// The records apiwarden writes: one per HTTP exchange and one per closed connection.
// Field names of the JSON form are a documented contract (README, "Record schema").
#pragma once

#include "agent/credentials/credential.h"
#include "agent/protocols/tls/certificate.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace apiwarden::records {

enum class Direction : uint8_t { kClient, kServer };  // which end the socket's owner is

struct Endpoint {
  std::string ip;  // textual: "10.0.0.1", "::1"; IPv4-mapped IPv6 shown as plain IPv4
  uint16_t port = 0;
};

struct Process {
  std::string exe;   // /proc/<pid>/exe of a process in the cgroup
  int pid = 0;
  std::string user;  // its user name (or uid)
};

// Who a workload is. Empty strings are unknown and never written: nothing is guessed.
struct Workload {
  uint64_t cgroup_id = 0;
  std::optional<std::string> cgroup_path;  // relative to the cgroup2 mount, "/a/b"; absent if unknown
  std::string container_id, pod_uid;       // from the cgroup path
  std::string pod, ns, service_account, node, owner;  // from the Kubernetes API; owner "Deployment/api"
  std::vector<std::pair<std::string, std::string>> labels;
  std::string spiffe_id;     // spiffe://<trust-domain>/ns/<ns>/sa/<sa>
  std::string systemd_unit;  // host services
  std::optional<Process> process;
};

struct TlsInfo {
  std::string sni;      // may be empty when the ClientHello had none
  std::string version;  // "TLS1.3" ...
  std::string alpn;     // first offered protocol, empty if none
  std::optional<tls::CertificateInfo> server_cert;  // TLS 1.2: the server's leaf certificate
  std::optional<tls::CertificateInfo> client_cert;  // TLS 1.2 mutual TLS: the client's
  bool intercepted = false;  // the plaintext was read at the TLS library (uprobes)
};

// The other end of a connection.
struct Peer {
  std::string scope;                  // "node", "cluster" or "external"
  std::optional<Workload> workload;   // when the other end is a workload on this node
};

// Who and where: the same for every record of one connection, so records point to it.
struct FlowInfo {
  Direction direction = Direction::kClient;
  Workload workload;
  Endpoint local;
  Endpoint remote;
  Peer peer;
  std::optional<TlsInfo> tls;
};

// Records are handed to sinks by reference and valid only during RecordSink::write().
struct HttpRecord {
  const FlowInfo* flow = nullptr;
  uint64_t ts_ns = 0;  // wall clock of the request's first byte
  std::string method;
  std::string path;  // target as sent, query string included, secret parameters REDACTED
  std::string host;  // empty: absent
  std::optional<uint16_t> status;  // absent when no response was seen
  std::string_view version;        // "1.0" or "1.1"
  uint64_t latency_us = 0;         // request's first byte -> response's first byte, at this socket
  uint64_t request_bytes = 0;      // head + body as sent
  uint64_t response_bytes = 0;
  credentials::Credential credential;  // fingerprint and facts only, never the secret
};

struct ConnectionRecord {
  const FlowInfo* flow = nullptr;
  uint64_t ts_ns = 0;  // wall clock of the close
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t duration_us = 0;
  uint32_t srtt_us = 0;
  uint32_t retransmits = 0;
  uint64_t http_requests = 0;  // HTTP exchanges seen on this connection
};

class RecordSink {
 public:
  virtual ~RecordSink() = default;
  virtual void write(const HttpRecord& record) = 0;
  virtual void write(const ConnectionRecord& record) = 0;
  virtual void flush() = 0;
};

}  // namespace apiwarden::records
