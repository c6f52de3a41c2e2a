#include "agent/flows/connection_tracker.h"

namespace apiwarden::flows {

ConnectionTracker::ConnectionTracker(records::RecordSink& sink, const credentials::CredentialExtractor& credentials,
                                     WorkloadDirectory& workloads, const WallClockMapper& wall, TrackerOptions options)
    : sink_(sink), workloads_(workloads), options_(options), ctx_{sink_, credentials, workloads, wall, options_, stats_} {}

ConnectionTracker::~ConnectionTracker() = default;

Connection* ConnectionTracker::findOrCreate(const apiwarden_flow& flow, uint64_t now_ns) {
  auto it = connections_.find(flow.cookie);
  if (it != connections_.end()) return it->second.get();
  if (connections_.size() >= options_.max_connections) {
    ++stats_.table_full;
    return nullptr;
  }
  auto created = std::make_unique<Connection>(flow, workloads_.describe(flow.cgroup_id), now_ns, ctx_);
  return connections_.emplace(flow.cookie, std::move(created)).first->second.get();
}

void ConnectionTracker::onPayload(const apiwarden_payload_event& event, std::span<const uint8_t> data) {
  if (Connection* connection = findOrCreate(event.flow, event.hdr.ts_ns)) connection->onPayload(event, data);
}

void ConnectionTracker::onConnection(const apiwarden_conn_event& event) {
  if (event.hdr.type == APIWARDEN_RECORD_CONN_OPEN) {
    ++stats_.connections_opened;
    findOrCreate(event.flow, event.hdr.ts_ns);
    return;
  }
  ++stats_.connections_closed;
  auto it = connections_.find(event.flow.cookie);
  if (it != connections_.end()) {
    it->second->onClose(event);
    connections_.erase(it);
    return;
  }
  // Opened before the agent started (or evicted): still worth its connection record.
  Connection(event.flow, workloads_.describe(event.flow.cgroup_id), event.hdr.ts_ns, ctx_).onClose(event);
}

void ConnectionTracker::sweep(uint64_t now_monotonic_ns) {
  std::erase_if(connections_, [&](const auto& entry) {
    bool idle = now_monotonic_ns > entry.second->lastSeenNs() &&
                now_monotonic_ns - entry.second->lastSeenNs() > options_.idle_timeout_ns;
    if (idle) ++stats_.idle_evicted;
    return idle;
  });
}

}  // namespace apiwarden::flows
