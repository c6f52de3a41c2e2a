#include "agent/export/metrics.h"

#include <prometheus/exposer.h>

#include <array>

namespace apiwarden::metrics {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;

constexpr std::array<std::string_view, 9> kMethods = {"GET",  "POST",    "PUT",     "DELETE", "PATCH",
                                                      "HEAD", "OPTIONS", "CONNECT", "TRACE"};

constexpr std::array<std::string_view, 6> kStatusClasses = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};

constexpr size_t kMethodSlots = kMethods.size() + 1;  // + OTHER
constexpr size_t kStatusSlots = 6;                    // none, 1xx .. 5xx

size_t methodSlot(std::string_view method) {
  for (size_t i = 0; i < kMethods.size(); ++i) {
    if (method == kMethods[i]) return i;
  }
  return kMethods.size();
}

size_t statusSlot(const std::optional<uint16_t>& status) {
  if (!status || *status < 100 || *status > 599) return 0;
  return *status / 100;
}

}  // namespace

struct AgentMetrics::WorkloadSeries {
  std::string workload;
  std::string_view direction;
  bool overflow = false;  // counted under workload="other"
  std::array<std::array<prometheus::Counter*, kStatusSlots>, kMethodSlots> requests{};
};

AgentMetrics::AgentMetrics(size_t max_workloads)
    : registry_(std::make_shared<prometheus::Registry>()), max_workloads_(max_workloads) {
  auto& kernel_records = BuildCounter()
                             .Name("apiwarden_capture_records_total")
                             .Help("Records the kernel programs wrote to the ring buffer")
                             .Register(*registry_);
  auto& lost = BuildCounter()
                   .Name("apiwarden_capture_lost_total")
                   .Help("Capture losses in the kernel, by reason")
                   .Register(*registry_);
  auto& skipped = BuildCounter()
                      .Name("apiwarden_capture_skipped_segments_total")
                      .Help("Payload segments of connections that are neither HTTP nor a TLS handshake")
                      .Register(*registry_);
  auto& unparsed = BuildCounter()
                       .Name("apiwarden_capture_unparsed_packets_total")
                       .Help("TCP packets whose headers the kernel program could not read")
                       .Register(*registry_);
  auto& decoded = BuildCounter()
                      .Name("apiwarden_pipeline_events_decoded_total")
                      .Help("Ring-buffer records decoded by the agent")
                      .Register(*registry_);
  auto& rejected = BuildCounter()
                       .Name("apiwarden_pipeline_events_rejected_total")
                       .Help("Ring-buffer records rejected by the decoder, by reason")
                       .Register(*registry_);
  auto& parse_errors = BuildCounter()
                           .Name("apiwarden_http_parse_errors_total")
                           .Help("HTTP/1.x parse errors, by reason")
                           .Register(*registry_);
  auto& connections = BuildCounter()
                          .Name("apiwarden_flows_connections_total")
                          .Help("TCP connections seen opening and closing")
                          .Register(*registry_);
  auto& flow_drops = BuildCounter()
                         .Name("apiwarden_flows_dropped_total")
                         .Help("Connections not tracked or forgotten, by reason")
                         .Register(*registry_);
  auto& gap_bytes = BuildCounter()
                        .Name("apiwarden_flows_gap_bytes_total")
                        .Help("Stream bytes never captured (beyond the capture limit, or lost)")
                        .Register(*registry_);
  auto& records_written =
      BuildCounter().Name("apiwarden_records_written_total").Help("Records written by type").Register(*registry_);
  auto& record_errors = BuildCounter()
                            .Name("apiwarden_records_write_errors_total")
                            .Help("Records that could not be written (a failed write, or more than 64 MiB of output backlog)")
                            .Register(*registry_);
  auto& unanswered = BuildCounter()
                         .Name("apiwarden_http_unpaired_total")
                         .Help("HTTP messages that could not be paired, by reason")
                         .Register(*registry_);

  // The order here is the order update() fills the mirrors in.
  mirrors_.emplace_back(kernel_records.Add({}));
  mirrors_.emplace_back(lost.Add({{"reason", "ringbuf_full"}}));
  mirrors_.emplace_back(lost.Add({{"reason", "truncated"}}));
  mirrors_.emplace_back(lost.Add({{"reason", "map_full"}}));
  mirrors_.emplace_back(skipped.Add({{"reason", "opaque"}}));
  mirrors_.emplace_back(unparsed.Add({}));
  mirrors_.emplace_back(decoded.Add({}));
  for (size_t i = 0; i < events::kRejectReasonCount; ++i) {
    mirrors_.emplace_back(rejected.Add({{"reason", std::string(toString(static_cast<events::RejectReason>(i)))}}));
  }
  for (int i = 0; i < http::kParseErrorCount; ++i) {
    mirrors_.emplace_back(parse_errors.Add({{"reason", std::string(toString(static_cast<http::ParseError>(i)))}}));
  }
  mirrors_.emplace_back(connections.Add({{"event", "opened"}}));
  mirrors_.emplace_back(connections.Add({{"event", "closed"}}));
  mirrors_.emplace_back(flow_drops.Add({{"reason", "table_full"}}));
  mirrors_.emplace_back(flow_drops.Add({{"reason", "idle"}}));
  mirrors_.emplace_back(gap_bytes.Add({}));
  mirrors_.emplace_back(records_written.Add({{"type", "http"}}));
  mirrors_.emplace_back(records_written.Add({{"type", "connection"}}));
  mirrors_.emplace_back(record_errors.Add({}));
  mirrors_.emplace_back(unanswered.Add({{"reason", "no_response"}}));
  mirrors_.emplace_back(unanswered.Add({{"reason", "no_request"}}));
  mirrors_.emplace_back(unanswered.Add({{"reason", "too_many_pending"}}));

  mirrors_.emplace_back(lost.Add({{"reason", "tls_plaintext"}}));
  auto& identity =
      BuildCounter()
          .Name("apiwarden_identity_lookups_total")
          .Help("Workload identity lookups by stage (cgroup path, workload cache, pod metadata) and result")
          .Register(*registry_);
  mirrors_.emplace_back(identity.Add({{"stage", "cgroup"}, {"result", "hit"}}));
  mirrors_.emplace_back(identity.Add({{"stage", "cgroup"}, {"result", "miss"}}));
  mirrors_.emplace_back(identity.Add({{"stage", "workload_cache"}, {"result", "hit"}}));
  mirrors_.emplace_back(identity.Add({{"stage", "workload_cache"}, {"result", "miss"}}));
  mirrors_.emplace_back(identity.Add({{"stage", "pod"}, {"result", "miss"}}));
  auto& kube =
      BuildCounter()
          .Name("apiwarden_kube_api_total")
          .Help("Kubernetes API pod list/watch activity: lists, watches, events, relists after 410 Gone, errors")
          .Register(*registry_);
  for (const char* event : {"list", "watch", "event", "relist_gone", "error"}) {
    mirrors_.emplace_back(kube.Add({{"event", event}}));
  }

  auto& alerts = BuildCounter()
                     .Name("apiwarden_alerts_total")
                     .Help("Alerts raised by detector (repeats within the alert window included), and suppressed")
                     .Register(*registry_);
  for (std::string_view detector : detect::kDetectorIds) {
    mirrors_.emplace_back(alerts.Add({{"detector", std::string(detector)}}));
  }
  mirrors_.emplace_back(alerts.Add({{"detector", "suppressed"}}));

  auto& refused = BuildCounter()
                      .Name("apiwarden_enforcement_refused_total")
                      .Help("What enforcement rules refused (mode=enforce) or would have refused (mode=monitor): "
                            "connects, dropped packets, aborted connections, requests carrying a refused credential")
                      .Register(*registry_);
  for (auto mode : {enforce::Mode::kMonitor, enforce::Mode::kEnforce}) {
    for (size_t kind = 0; kind < enforce::kRefusalCount; ++kind) {
      mirrors_.emplace_back(refused.Add({{"mode", std::string(enforce::toString(mode))},
                                         {"kind", std::string(enforce::toString(static_cast<enforce::Refusal>(kind)))}}));
    }
  }
  auto& control = BuildCounter()
                      .Name("apiwarden_control_requests_total")
                      .Help("apiwardenctl requests, by result")
                      .Register(*registry_);
  mirrors_.emplace_back(control.Add({{"result", "ok"}}));
  mirrors_.emplace_back(control.Add({{"result", "error"}}));
  enforcement_rules_ = &BuildGauge()
                            .Name("apiwarden_enforcement_rules")
                            .Help("Enforcement rules in force (cut, revoke, bind)")
                            .Register(*registry_)
                            .Add({});

  tls_libraries_ = &BuildGauge()
                        .Name("apiwarden_tls_libraries_probed")
                        .Help("TLS library files (libssl) with plaintext uprobes attached")
                        .Register(*registry_)
                        .Add({});
  connections_tracked_ = &BuildGauge()
                              .Name("apiwarden_flows_connections_tracked")
                              .Help("Connections currently tracked")
                              .Register(*registry_)
                              .Add({});
  requests_ = &BuildCounter()
                   .Name("apiwarden_http_requests_total")
                   .Help("HTTP exchanges by workload (cgroup path), direction, method and status class")
                   .Register(*registry_);
  workload_overflow_ = &BuildCounter()
                            .Name("apiwarden_http_workload_overflow_total")
                            .Help("Requests counted under workload=\"other\" because the label limit was hit")
                            .Register(*registry_)
                            .Add({});
}

AgentMetrics::~AgentMetrics() = default;

Result<void> AgentMetrics::listen(const std::string& address) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(address, 2);
  } catch (const std::exception& e) {
    return fail(EADDRINUSE, "serving metrics on " + address + ": " + e.what());
  }
  exposer_->RegisterCollectable(registry_);
  return {};
}

void AgentMetrics::update(const PipelineSnapshot& s) {
  size_t i = 0;
  for (uint32_t stat = APIWARDEN_STAT_RECORDS; stat <= APIWARDEN_STAT_UNPARSED; ++stat)
    mirrors_[i++].set(s.kernel[stat]);
  mirrors_[i++].set(s.decoder.decoded);
  for (uint64_t count : s.decoder.rejected) mirrors_[i++].set(count);
  for (uint64_t count : s.tracker.parse_errors) mirrors_[i++].set(count);
  mirrors_[i++].set(s.tracker.connections_opened);
  mirrors_[i++].set(s.tracker.connections_closed);
  mirrors_[i++].set(s.tracker.table_full);
  mirrors_[i++].set(s.tracker.idle_evicted);
  mirrors_[i++].set(s.tracker.gap_bytes);
  mirrors_[i++].set(s.tracker.http_records);
  mirrors_[i++].set(s.tracker.connection_records);
  mirrors_[i++].set(s.record_write_errors);
  mirrors_[i++].set(s.tracker.unanswered_requests);
  mirrors_[i++].set(s.tracker.orphan_responses);
  mirrors_[i++].set(s.tracker.pending_overflow);
  mirrors_[i++].set(s.kernel[APIWARDEN_STAT_LOST_TLS_PLAINTEXT]);
  mirrors_[i++].set(s.cgroups.hits);
  mirrors_[i++].set(s.cgroups.misses);
  mirrors_[i++].set(s.workloads.cache_hits);
  mirrors_[i++].set(s.workloads.described);
  mirrors_[i++].set(s.workloads.pod_misses);
  for (uint64_t count : {s.kube_lists, s.kube_watches, s.kube_events, s.kube_relists_gone, s.kube_errors}) {
    mirrors_[i++].set(count);
  }
  for (uint64_t count : s.detect.by_detector) mirrors_[i++].set(count);
  mirrors_[i++].set(s.detect.suppressed);
  for (const auto& by_kind : s.enforce.refused) {
    for (uint64_t count : by_kind) mirrors_[i++].set(count);
  }
  mirrors_[i++].set(s.enforce.control_requests - s.enforce.control_errors);
  mirrors_[i++].set(s.enforce.control_errors);
  enforcement_rules_->Set(static_cast<double>(s.enforce.rules));
  tls_libraries_->Set(static_cast<double>(s.tls_libraries));
  connections_tracked_->Set(static_cast<double>(s.connections_tracked));
}

AgentMetrics::WorkloadSeries& AgentMetrics::seriesFor(const records::FlowInfo& flow) {
  bool server = flow.direction == records::Direction::kServer;
  auto& slot = series_[flow.workload.cgroup_id << 1 | (server ? 1 : 0)];
  if (slot) return *slot;
  slot = std::make_unique<WorkloadSeries>();
  slot->direction = server ? "server" : "client";
  slot->workload = flow.workload.cgroup_path.value_or("unknown");
  if (!workloads_.contains(slot->workload)) {
    if (workloads_.size() >= max_workloads_) {
      slot->workload = "other";
      slot->overflow = true;
    } else {
      workloads_.insert(slot->workload);
    }
  }
  return *slot;
}

void AgentMetrics::countRequest(const records::HttpRecord& record) {
  WorkloadSeries& series = seriesFor(*record.flow);
  size_t method = methodSlot(record.method), status = statusSlot(record.status);
  prometheus::Counter*& counter = series.requests[method][status];
  if (!counter) {
    counter = &requests_->Add({{"workload", series.workload},
                               {"direction", std::string(series.direction)},
                               {"method", std::string(method < kMethods.size() ? kMethods[method] : "OTHER")},
                               {"status_class", std::string(kStatusClasses[status])}});
  }
  counter->Increment();
  if (series.overflow) workload_overflow_->Increment();
}

}  // namespace apiwarden::metrics
