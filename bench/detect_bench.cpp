// What the detectors cost per HTTP record: the records of a node's mixed traffic (60 callers, 6
// services, 40 routes with object ids, bearer credentials, some errors and refusals) through the
// DetectionEngine, side by side with the same records handed straight to the next sink. Prints the
// detectors' nanoseconds per record last (target: under 1,000).
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "agent/detect/engine.h"
#include "bench/reporter.h"

namespace {

using namespace apiwarden;

constexpr int kRecords = 20000;
constexpr uint64_t kStart = 1'800'000'000ULL * 1'000'000'000ULL;

struct Fixture {
  std::vector<records::FlowInfo> flows;  // one per caller: server side, the caller as peer
  std::vector<records::HttpRecord> records;
};

const Fixture& fixture() {
  static const Fixture kFixture = [] {
    Fixture f;
    std::mt19937 random(7);
    for (int c = 0; c < 60; ++c) {
      records::FlowInfo flow;
      flow.direction = records::Direction::kServer;
      flow.workload = {static_cast<uint64_t>(100 + c % 6), "/kubepods.slice/service-" + std::to_string(c % 6)};
      flow.peer.scope = "node";
      flow.peer.workload =
          records::Workload{static_cast<uint64_t>(1000 + c), "/kubepods.slice/caller-" + std::to_string(c)};
      flow.remote = {"10.0.0." + std::to_string(c), 40000};
      f.flows.push_back(std::move(flow));
    }
    for (int i = 0; i < kRecords; ++i) {
      int c = static_cast<int>(random() % 60);
      records::HttpRecord r;
      r.flow = &f.flows[static_cast<size_t>(c)];
      r.ts_ns = kStart + static_cast<uint64_t>(i) * 2'000'000ULL;  // 500 req/s for 40 s
      r.method = random() % 10 == 0 ? "POST" : "GET";
      r.path = "/api/v1/resource" + std::to_string(random() % 40) + "/" + std::to_string(random() % 5000) + "?page=2";
      uint32_t roll = random() % 100;
      r.status = roll < 90 ? 200 : roll < 95 ? 404 : roll < 98 ? 403 : 500;
      r.response_bytes = 500 + random() % 4000;
      r.credential.scheme = credentials::Scheme::kBearer;
      r.credential.fingerprint = "fp" + std::to_string(c);
      r.credential.source = "header:authorization";
      f.records.push_back(std::move(r));
    }
    return f;
  }();
  return kFixture;
}

struct CountingSink final : records::RecordSink {
  uint64_t http = 0;
  void write(const records::HttpRecord&) override { ++http; }
  void write(const records::ConnectionRecord&) override {}
  void flush() override {}
};

void BM_Passthrough(benchmark::State& state) {
  CountingSink sink;
  for (auto _ : state) {
    for (const auto& r : fixture().records) static_cast<records::RecordSink&>(sink).write(r);
  }
  benchmark::DoNotOptimize(sink.http);
  state.SetItemsProcessed(state.iterations() * kRecords);
}

void BM_Detectors(benchmark::State& state) {
  CountingSink sink;
  auto alerts = detect::AlertLog::open("/dev/null", 600'000'000'000ULL);
  if (!alerts) {
    state.SkipWithError("cannot open /dev/null");
    return;
  }
  detect::DetectOptions options;
  options.learning_ns = 10'000'000'000ULL;  // a quarter of the stream learns, the rest is judged
  for (auto _ : state) {
    state.PauseTiming();
    auto engine = std::make_unique<detect::DetectionEngine>(sink, **alerts, options);
    state.ResumeTiming();
    for (const auto& r : fixture().records) engine->write(r);
    state.PauseTiming();
    engine.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kRecords);
}

BENCHMARK(BM_Passthrough)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Detectors)->Unit(benchmark::kMillisecond);

// Nanoseconds per record of a benchmark's median run (reported in ms per iteration).
double nsPerRecord(const bench::MedianReporter& reporter, const std::string& name) {
  const auto* run = reporter.median(name);
  return run ? run->GetAdjustedRealTime() * 1e6 / kRecords : 0;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  bench::MedianReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  double passthrough = nsPerRecord(reporter, "BM_Passthrough"), detectors = nsPerRecord(reporter, "BM_Detectors");
  std::printf("passthrough %.1f ns per record; with detectors %.1f ns per record\n", passthrough, detectors);
  std::printf("detectors cost %.0f ns per request (target < 1000)\n", detectors - passthrough);
  return 0;
}
