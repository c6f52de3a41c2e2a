// The table of observed sockets, keyed by socket cookie: routes decoded events to their
// Connection, creates entries on first sight (connections that predate the agent included),
// retires them on close, and bounds the table by size and idle time.
#pragma once

#include "agent/events/decoder.h"
#include "agent/flows/connection.h"

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

namespace apiwarden::flows {

class ConnectionTracker final : public events::EventHandler {
 public:
  ConnectionTracker(records::RecordSink& sink, const credentials::CredentialExtractor& credentials,
                    WorkloadDirectory& workloads, const WallClockMapper& wall, TrackerOptions options = {});
  ~ConnectionTracker() override;

  void onPayload(const apiwarden_payload_event& event, std::span<const uint8_t> data) override;
  void onConnection(const apiwarden_conn_event& event) override;

  // Forgets connections idle for longer than options.idle_timeout_ns.
  void sweep(uint64_t now_monotonic_ns);

  size_t size() const { return connections_.size(); }
  const TrackerStats& stats() const { return stats_; }

 private:
  Connection* findOrCreate(const apiwarden_flow& flow, uint64_t now_ns);

  records::RecordSink& sink_;
  WorkloadDirectory& workloads_;
  TrackerOptions options_;
  TrackerStats stats_;
  ConnectionContext ctx_;
  std::unordered_map<uint64_t, std::unique_ptr<Connection>> connections_;
};

}  // namespace apiwarden::flows
