// The table of observed sockets, keyed by socket cookie: routes decoded events to their
// Connection, creates entries on first sight (connections that predate the agent included),
// retires them on close, and bounds the table by size and idle time.
#pragma once

#include "agent/events/decoder.h"
#include "agent/flows/connection.h"

#include <memory>
#include <optional>
#include <string>
#include <array>
#include <unordered_map>

namespace apiwarden::flows {

class ConnectionTracker final : public events::EventHandler, public PeerDirectory {
 public:
  ConnectionTracker(records::RecordSink& sink, const credentials::CredentialExtractor& credentials,
                    WorkloadDirectory& workloads, const NetworkScope& scope, const WallClockMapper& wall,
                    TrackerOptions options = {});
  ~ConnectionTracker() override;

  void onPayload(const apiwarden_payload_event& event, std::span<const uint8_t> data) override;
  void onConnection(const apiwarden_conn_event& event) override;
  // The workload whose tracked socket is bound to addr:port (a client's ephemeral port, or a
  // server's listening address shared by its accepted sockets).
  std::optional<records::Workload> workloadAt(const uint8_t addr[16], uint16_t port) override;

  // Forgets connections idle for longer than options.idle_timeout_ns.
  void sweep(uint64_t now_monotonic_ns);

  size_t size() const { return connections_.size(); }
  const TrackerStats& stats() const { return stats_; }

  struct EndpointKey {
    std::array<uint8_t, 16> addr;
    uint16_t port;
    bool operator==(const EndpointKey&) const = default;
  };
  struct EndpointHash {
    size_t operator()(const EndpointKey& key) const;
  };

 private:
  struct Entry {
    std::unique_ptr<Connection> connection;
    EndpointKey local;
  };
  struct LocalUse {
    uint64_t cgroup_id;
    size_t sockets;
  };

  Connection* findOrCreate(const apiwarden_flow& flow, uint64_t now_ns);
  void forget(const EndpointKey& local);

  records::RecordSink& sink_;
  WorkloadDirectory& workloads_;
  TrackerOptions options_;
  TrackerStats stats_;
  ConnectionContext ctx_;
  std::unordered_map<uint64_t, Entry> connections_;
  std::unordered_map<EndpointKey, LocalUse, EndpointHash> local_endpoints_;
};

}  // namespace apiwarden::flows
