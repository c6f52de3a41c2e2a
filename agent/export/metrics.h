// Prometheus metrics of the agent: the pipeline's own health, mirrored from the counters each
// stage keeps, and HTTP request counters by workload, direction, method and status class.
//
// Labels come from bounded sets only: methods outside the standard ones count as "OTHER", and
// after max_workloads distinct workloads further ones count as workload="other".
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "agent/detect/engine.h"
#include "agent/enforce/enforcer.h"
#include "agent/events/decoder.h"
#include "agent/export/record.h"
#include "agent/flows/connection.h"
#include "agent/identity/cgroup_resolver.h"
#include "agent/identity/workload_resolver.h"
#include "agent/loader/capture_program.h"
#include "apiwarden/common/result.h"

namespace prometheus {
class Exposer;
}

namespace apiwarden::metrics {

// A prometheus counter that follows an absolute count kept elsewhere.
class CounterMirror {
 public:
  explicit CounterMirror(prometheus::Counter& counter) : counter_(&counter) {}
  void set(uint64_t total) {
    if (total > last_) counter_->Increment(static_cast<double>(total - last_));
    last_ = total;
  }

 private:
  prometheus::Counter* counter_;
  uint64_t last_ = 0;
};

struct PipelineSnapshot {
  loader::KernelStats kernel{};
  events::DecoderStats decoder;
  flows::TrackerStats tracker;
  size_t connections_tracked = 0;
  uint64_t records_written = 0;
  uint64_t record_write_errors = 0;
  size_t tls_libraries = 0;  // libssl files with plaintext probes
  identity::CgroupResolverStats cgroups;
  identity::WorkloadResolverStats workloads;
  uint64_t kube_lists = 0, kube_watches = 0, kube_events = 0, kube_relists_gone = 0, kube_errors = 0;
  detect::DetectStats detect;  // zeros when detection is off
  enforce::EnforcerStats enforce;  // zeros when enforcement is off
};

class AgentMetrics {
 public:
  explicit AgentMetrics(size_t max_workloads = 256);
  ~AgentMetrics();

  // Serves /metrics on "host:port" (e.g. "127.0.0.1:9464"); an error if the port is taken.
  Result<void> listen(const std::string& address);
  prometheus::Registry& registry() { return *registry_; }

  void update(const PipelineSnapshot& snapshot);
  // Counts one HTTP exchange.
  void countRequest(const records::HttpRecord& record);

 private:
  // The request counters of one workload in one direction, added to the family on first use.
  struct WorkloadSeries;
  WorkloadSeries& seriesFor(const records::FlowInfo& flow);

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  size_t max_workloads_;
  std::vector<CounterMirror> mirrors_;  // in the order update() fills them
  prometheus::Gauge* connections_tracked_ = nullptr;
  prometheus::Gauge* tls_libraries_ = nullptr;
  prometheus::Gauge* enforcement_rules_ = nullptr;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Counter* workload_overflow_ = nullptr;
  std::unordered_map<uint64_t, std::unique_ptr<WorkloadSeries>> series_;  // (cgroup id, direction)
  std::unordered_set<std::string> workloads_;  // distinct workload label values, at most max_workloads_
};

// Forwards records to another sink and counts HTTP exchanges in the metrics.
class MetricsRecordSink final : public records::RecordSink {
 public:
  MetricsRecordSink(records::RecordSink& next, AgentMetrics& metrics) : next_(next), metrics_(metrics) {}
  void write(const records::HttpRecord& record) override {
    metrics_.countRequest(record);
    next_.write(record);
  }
  void write(const records::ConnectionRecord& record) override { next_.write(record); }
  void flush() override { next_.flush(); }

 private:
  records::RecordSink& next_;
  AgentMetrics& metrics_;
};

}  // namespace apiwarden::metrics
