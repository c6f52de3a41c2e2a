#include "agent/flows/connection_tracker.h"

#include <cstring>
#include <string_view>

namespace apiwarden::flows {
namespace {

ConnectionTracker::EndpointKey localOf(const apiwarden_flow& flow) {
  ConnectionTracker::EndpointKey key{};
  std::memcpy(key.addr.data(), flow.local_addr, key.addr.size());
  key.port = flow.local_port;
  return key;
}

}  // namespace

size_t ConnectionTracker::EndpointHash::operator()(const EndpointKey& key) const {
  return std::hash<std::string_view>()(
             std::string_view(reinterpret_cast<const char*>(key.addr.data()), key.addr.size())) ^
         (static_cast<size_t>(key.port) * 0x9E3779B97F4A7C15ULL);
}

ConnectionTracker::ConnectionTracker(records::RecordSink& sink, const credentials::CredentialExtractor& credentials,
                                     WorkloadDirectory& workloads, const NetworkScope& scope,
                                     const WallClockMapper& wall, TrackerOptions options)
    : sink_(sink),
      workloads_(workloads),
      options_(options),
      ctx_{sink_, credentials, workloads, *this, scope, wall, options_, stats_} {}

ConnectionTracker::~ConnectionTracker() = default;

Connection* ConnectionTracker::findOrCreate(const apiwarden_flow& flow, uint64_t now_ns) {
  auto it = connections_.find(flow.cookie);
  if (it != connections_.end()) return it->second.connection.get();
  if (connections_.size() >= options_.max_connections) {
    ++stats_.table_full;
    return nullptr;
  }
  Entry entry{std::make_unique<Connection>(flow, workloads_.describe(flow.cgroup_id), now_ns, ctx_), localOf(flow)};
  LocalUse& use = local_endpoints_[entry.local];
  use.cgroup_id = flow.cgroup_id;
  ++use.sockets;
  return connections_.emplace(flow.cookie, std::move(entry)).first->second.connection.get();
}

void ConnectionTracker::forget(const EndpointKey& local) {
  auto it = local_endpoints_.find(local);
  if (it != local_endpoints_.end() && --it->second.sockets == 0) local_endpoints_.erase(it);
}

std::optional<records::Workload> ConnectionTracker::workloadAt(const uint8_t addr[16], uint16_t port) {
  EndpointKey key{};
  std::memcpy(key.addr.data(), addr, key.addr.size());
  key.port = port;
  auto it = local_endpoints_.find(key);
  if (it == local_endpoints_.end()) return std::nullopt;
  return workloads_.describe(it->second.cgroup_id);
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
    it->second.connection->onClose(event);
    forget(it->second.local);
    connections_.erase(it);
    return;
  }
  // Opened before the agent started (or evicted): still worth its connection record.
  Connection(event.flow, workloads_.describe(event.flow.cgroup_id), event.hdr.ts_ns, ctx_).onClose(event);
}

void ConnectionTracker::sweep(uint64_t now_monotonic_ns) {
  std::erase_if(connections_, [&](const auto& entry) {
    uint64_t last = entry.second.connection->lastSeenNs();
    bool idle = now_monotonic_ns > last && now_monotonic_ns - last > options_.idle_timeout_ns;
    if (idle) {
      ++stats_.idle_evicted;
      forget(entry.second.local);
    }
    return idle;
  });
}

}  // namespace apiwarden::flows
