#include "agent/agent.h"

#include "agent/control/control_server.h"
#include "agent/credentials/credential.h"
#include "agent/detect/baseline_store.h"
#include "agent/detect/config.h"
#include "agent/detect/engine.h"
#include "agent/enforce/enforcer.h"
#include "agent/events/decoder.h"
#include "agent/export/json_lines.h"
#include "agent/export/metrics.h"
#include "agent/flows/connection_tracker.h"
#include "agent/identity/cgroup_resolver.h"
#include "agent/identity/kube_api.h"
#include "agent/identity/workload_resolver.h"
#include "agent/loader/capture_program.h"
#include "apiwarden/common/clock.h"
#include "apiwarden/common/log.h"

#include <bpf/libbpf.h>
#include <sys/stat.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <unistd.h>

namespace apiwarden {
namespace {

namespace asio = boost::asio;

int onRecord(void* ctx, void* data, size_t size) {
  static_cast<events::Decoder*>(ctx)->decode({static_cast<const uint8_t*>(data), size});
  return 0;
}

// Resolves the monitored directory: an absolute cgroup v2 directory, the mount itself by default.
Result<std::string> monitoredCgroup(const std::string& requested, const std::string& mount) {
  std::string dir = requested.empty() ? mount : requested;
  std::error_code ec;
  auto canonical = std::filesystem::canonical(dir, ec);
  if (ec) return fail(ec.value(), "--cgroup-root " + dir);
  std::string path = canonical.string();
  if (path != mount && path.rfind(mount + "/", 0) != 0) {
    return fail(EINVAL, "--cgroup-root " + dir + " is not inside the cgroup v2 hierarchy at " + mount);
  }
  return path;
}

// The Kubernetes API to read pods from: a kubeconfig if given, the in-cluster config if the
// agent runs in a pod, else none (a plain host).
Result<std::optional<identity::KubeApiConfig>> kubeApi(const AgentOptions& options) {
  if (!options.kubeconfig.empty()) {
    auto config = identity::KubeApiConfig::fromKubeconfig(options.kubeconfig);
    if (!config) return std::unexpected(config.error());
    return std::optional(*config);
  }
  if (!std::getenv("KUBERNETES_SERVICE_HOST")) return std::optional<identity::KubeApiConfig>();
  auto config = identity::KubeApiConfig::inCluster();
  if (!config) return std::unexpected(config.error());
  return std::optional(*config);
}

std::string nodeName(const AgentOptions& options) {
  if (!options.node_name.empty()) return options.node_name;
  if (const char* env = std::getenv("NODE_NAME")) return env;
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return host;
}

// Passes records on, telling the enforcer which kernel token hash each credential has.
class CredentialTap final : public records::RecordSink {
 public:
  CredentialTap(records::RecordSink& next, enforce::Enforcer& enforcer) : next_(next), enforcer_(enforcer) {}
  void write(const records::HttpRecord& record) override {
    if (record.credential.token_hash != 0) enforcer_.noteCredential(record.credential.fingerprint, record.credential.token_hash);
    next_.write(record);
  }
  void write(const records::ConnectionRecord& record) override { next_.write(record); }
  void flush() override { next_.flush(); }

 private:
  records::RecordSink& next_;
  enforce::Enforcer& enforcer_;
};

// Everything the run loop owns, built in dependency order and torn down in reverse.
struct Pipeline {
  SystemClock clock;
  WallClockMapper wall{clock};
  std::unique_ptr<records::JsonLinesWriter> writer;
  metrics::AgentMetrics metrics;
  std::unique_ptr<metrics::MetricsRecordSink> sink;
  std::unique_ptr<detect::AlertLog> alerts;
  std::unique_ptr<detect::DetectionEngine> detection;
  records::RecordSink* head = nullptr;  // where the tracker's records enter: detection, or metrics
  std::string baseline_path;
  std::unique_ptr<identity::CgroupResolver> cgroups;
  identity::PodCache pods;
  std::unique_ptr<identity::PodWatcher> pod_watcher;
  std::unique_ptr<identity::WorkloadResolver> workloads;
  flows::NetworkScope scope;
  std::unique_ptr<credentials::Fingerprinter> fingerprinter;
  std::unique_ptr<credentials::CredentialExtractor> credentials;
  std::unique_ptr<enforce::Enforcer> enforcer;
  std::unique_ptr<CredentialTap> tap;  // tells the enforcer the token hash of each credential seen
  std::unique_ptr<flows::ConnectionTracker> tracker;
  std::unique_ptr<events::Decoder> decoder;
  std::unique_ptr<loader::CaptureProgram> capture;
  ring_buffer* ring = nullptr;

  ~Pipeline() {
    if (ring) ring_buffer__free(ring);
  }

  metrics::PipelineSnapshot snapshot() const {
    metrics::PipelineSnapshot s;
    if (auto kernel = capture->readStats()) s.kernel = *kernel;
    s.decoder = decoder->stats();
    s.tracker = tracker->stats();
    s.connections_tracked = tracker->size();
    if (auto* tls = capture->tls()) s.tls_libraries = tls->libraries();
    s.cgroups = cgroups->stats();
    if (detection) s.detect = detection->stats();
    s.workloads = workloads->stats();
    if (pod_watcher) {
      const auto& kube = pod_watcher->stats();
      s.kube_lists = kube.lists;
      s.kube_watches = kube.watches;
      s.kube_events = kube.events;
      s.kube_relists_gone = kube.relists_gone;
      s.kube_errors = kube.errors;
    }
    if (enforcer) s.enforce = enforcer->stats();
    s.records_written = writer->written();
    s.record_write_errors = writer->writeErrors();
    return s;
  }

  // Saves what the detectors learnt; a failure is logged and retried at the next save.
  void saveBaseline() {
    if (!detection) return;
    if (auto saved = detect::saveBaseline(baseline_path, *detection); !saved) {
      logger("detect")->warn("saving the baseline: {}", saved.error().describe());
    }
  }
};

Result<void> build(Pipeline& p, const AgentOptions& options) {
  auto mount = identity::CgroupResolver::findCgroup2Mount();
  if (!mount) return std::unexpected(std::move(mount.error()).context("finding the cgroup v2 hierarchy"));
  auto root = monitoredCgroup(options.cgroup_root, *mount);
  if (!root) return std::unexpected(root.error());

  auto writer = records::JsonLinesWriter::open(options.records_path);
  if (!writer) return std::unexpected(std::move(writer.error()).context("opening --records"));
  p.writer = std::move(*writer);
  if (!options.metrics_listen.empty()) {
    if (auto listening = p.metrics.listen(options.metrics_listen); !listening) return listening;
  }
  p.sink = std::make_unique<metrics::MetricsRecordSink>(*p.writer, p.metrics);
  p.head = p.sink.get();
  if (!options.alerts_path.empty()) {
    auto alerts = detect::AlertLog::open(options.alerts_path, options.detect.alert_window_ns);
    if (!alerts) return std::unexpected(std::move(alerts.error()).context("opening --alerts"));
    p.alerts = std::move(*alerts);
    detect::DetectOptions detect_options = options.detect;
    if (!options.detect_config.empty()) {
      auto config = detect::loadDetectConfig(options.detect_config);
      if (!config) return std::unexpected(std::move(config.error()).context("loading --detect-config"));
      detect_options.config = std::move(*config);
    }
    p.detection = std::make_unique<detect::DetectionEngine>(*p.sink, *p.alerts, std::move(detect_options));
    p.head = p.detection.get();
    if (mkdir(options.state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return fail(errno, "creating the state dir " + options.state_dir);
    }
    p.baseline_path = options.state_dir + "/baseline.pb";
    auto loaded = detect::loadBaseline(p.baseline_path, *p.detection);
    if (!loaded) return std::unexpected(std::move(loaded.error()).context("loading the baseline"));
    if (loaded->outcome == detect::LoadOutcome::kLoaded) {
      logger("detect")->info("baseline restored from {}", p.baseline_path);
    } else if (loaded->outcome == detect::LoadOutcome::kSetAside) {
      logger("detect")->error("baseline {} rejected, learning afresh: {}", p.baseline_path, loaded->detail);
    }
  }
  auto fingerprinter = credentials::Fingerprinter::load(options.credential_key_file, options.state_dir);
  if (!fingerprinter) return std::unexpected(std::move(fingerprinter.error()).context("loading the credential key"));
  p.fingerprinter = std::make_unique<credentials::Fingerprinter>(std::move(*fingerprinter));
  p.credentials = std::make_unique<credentials::CredentialExtractor>(*p.fingerprinter);
  p.cgroups = std::make_unique<identity::CgroupResolver>(*mount, p.clock);
  auto kube = kubeApi(options);
  if (!kube) return std::unexpected(std::move(kube.error()).context("configuring the Kubernetes API"));
  if (*kube) {
    p.pod_watcher = std::make_unique<identity::PodWatcher>(**kube, nodeName(options), p.pods);
    p.pod_watcher->start();
  }
  p.workloads = std::make_unique<identity::WorkloadResolver>(*p.cgroups, *kube ? &p.pods : nullptr, p.clock,
                                                             identity::WorkloadResolverOptions{options.trust_domain});
  for (const auto& cidr : options.cluster_cidrs) {
    if (auto added = p.scope.addClusterCidr(cidr); !added) return added;
  }
  if (options.enforce != "off") {
    enforce::EnforcerOptions enforce_options{
        .mode = options.enforce == "enforce" ? enforce::Mode::kEnforce : enforce::Mode::kMonitor,
        .cgroup_mount = *mount,
        .cgroup_root = *root,
        .pin_dir = options.enforce_pin_dir,
        .state_path = options.state_dir + "/enforcement.json",
        .trust_domain = options.trust_domain,
        .default_ttl_s = options.enforce_default_ttl_s,
    };
    if (mkdir(options.state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return fail(errno, "creating the state dir " + options.state_dir);
    }
    if (!options.enforce_config.empty()) {
      auto responses = enforce::loadResponses(options.enforce_config);
      if (!responses) return std::unexpected(std::move(responses.error()).context("loading --enforce-config"));
      enforce_options.responses = std::move(*responses);
    }
    if (!p.alerts) logger("enforce")->warn("no --alerts: enforcement audit records go to this log only");
    auto enforcer = enforce::Enforcer::open(enforce_options, *p.workloads, p.pod_watcher ? &p.pods : nullptr,
                                            p.alerts.get(), p.clock);
    if (!enforcer) return std::unexpected(std::move(enforcer.error()).context("starting enforcement"));
    p.enforcer = std::move(*enforcer);
    p.credentials->setTokenHashKey(p.enforcer->tokenHashKey());
    if (p.alerts && !enforce_options.responses.empty()) {
      p.alerts->onWrite([enforcer = p.enforcer.get()](const detect::Alert& alert) { enforcer->respond(alert); });
    }
    p.tap = std::make_unique<CredentialTap>(*p.head, *p.enforcer);
    p.head = p.tap.get();
  }
  p.tracker = std::make_unique<flows::ConnectionTracker>(*p.head, *p.credentials, *p.workloads, p.scope, p.wall);
  p.decoder = std::make_unique<events::Decoder>(*p.tracker);

  loader::CaptureOptions capture_options{*root, options.ringbuf_mib << 20, options.tls_plaintext};
  auto capture = loader::CaptureProgram::open(capture_options);
  if (!capture) return std::unexpected(std::move(capture.error()).context("starting capture"));
  p.capture = std::move(*capture);

  p.ring = ring_buffer__new(p.capture->eventsFd(), onRecord, p.decoder.get(), nullptr);
  if (!p.ring) return fail(errno, "opening the ring buffer");
  logger("agent")->info("monitoring cgroup {} (records to {}, metrics {})", *root, options.records_path,
                        options.metrics_listen.empty() ? "off" : options.metrics_listen);
  return {};
}

// Re-arms itself every interval until the io_context stops.
template <typename Fn>
void every(asio::steady_timer& timer, std::chrono::microseconds interval, Fn fn) {
  timer.expires_after(interval);
  timer.async_wait([&timer, interval, fn](const boost::system::error_code& ec) {
    if (ec) return;
    fn();
    every(timer, interval, fn);
  });
}

}  // namespace

Result<void> runAgent(const AgentOptions& options) {
  loader::routeLibbpfLogs();
  if (auto ok = loader::checkEnvironment(); !ok) return ok;

  Pipeline pipeline;
  if (auto built = build(pipeline, options); !built) return built;
  auto log = logger("agent");

  asio::io_context io;
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int signal) {
    if (!ec) log->info("signal {}: detaching", signal);
    io.stop();
  });

  asio::steady_timer drain_timer(io), flush_timer(io), stats_timer(io);
  every(drain_timer, std::chrono::microseconds(options.drain_interval_us), [&] {
    int consumed = ring_buffer__consume(pipeline.ring);
    if (consumed < 0) log->warn("ring buffer consume failed: {}", consumed);
  });
  // Records reach the file within flush_interval_ms, without a write per drain.
  every(flush_timer, std::chrono::milliseconds(options.flush_interval_ms), [&] { pipeline.head->flush(); });
  unsigned stats_ticks = 0;
  every(stats_timer, std::chrono::milliseconds(options.stats_interval_ms), [&] {
    if (++stats_ticks % 60 == 0) pipeline.saveBaseline();
    pipeline.tracker->sweep(pipeline.clock.monotonicNs());
    if (pipeline.enforcer) pipeline.enforcer->tick();
    if (auto* tls = pipeline.capture->tls()) tls->scan();
    pipeline.metrics.update(pipeline.snapshot());
  });

  std::unique_ptr<control::ControlServer> control;
  if (pipeline.enforcer) {
    auto server = control::ControlServer::open(
        io, {options.control_socket, options.control_group},
        [&pipeline](const nlohmann::json& request, const control::Peer& peer) {
          return pipeline.enforcer->handle(request, peer.user + " (uid " + std::to_string(peer.uid) + ", pid " +
                                                        std::to_string(peer.pid) + ")");
        });
    if (!server) return std::unexpected(std::move(server.error()).context("opening the control socket"));
    control = std::move(*server);
    log->info("control socket {}", options.control_socket);
  }

  io.run();
  control.reset();

  // Drain what the kernel wrote before we stop listening, then detach (Pipeline's destructor).
  ring_buffer__consume(pipeline.ring);
  pipeline.head->flush();
  pipeline.saveBaseline();
  auto final_stats = pipeline.snapshot();
  log->info("stopped: {} records decoded, {} http records, {} connection records, {} lost (ring buffer full)",
            final_stats.decoder.decoded, final_stats.tracker.http_records, final_stats.tracker.connection_records,
            final_stats.kernel[APIWARDEN_STAT_LOST_RINGBUF]);
  return {};
}

}  // namespace apiwarden
