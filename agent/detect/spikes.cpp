// Volume detectors: request and error rates per caller against their own streaming baseline, and
// responses far larger than a route's usual ones.
#include <cmath>

#include "agent/detect/engine.h"

namespace apiwarden::detect {
namespace {

constexpr uint64_t kNsPerSecond = 1'000'000'000ULL;
constexpr double kRateAlpha = 1.0 / 60;    // per-second counts: about the last minute weighs most
constexpr double kSizeAlpha = 1.0 / 100;   // response sizes: about the last hundred responses
constexpr uint64_t kMaxIdleSeconds = 600;  // silent seconds folded in one by one, at most

}  // namespace

void Ewma::add(double x, double alpha) {
  if (n++ == 0) {
    mean = x;
    return;
  }
  double d = x - mean;
  mean += alpha * d;
  var = (1 - alpha) * (var + alpha * d * d);
}

void DetectionEngine::spikes(const Call& call, CallerState* caller) {
  const records::HttpRecord& record = *call.record;
  if (!caller) return;
  CallerRate& rate = caller->rate;
  uint64_t second = record.ts_ns / kNsPerSecond;
  if (second > rate.second) {  // close the second counted so far, and the silent ones after it
    rate.rate.add(static_cast<double>(rate.requests), kRateAlpha);
    rate.error_rate.add(static_cast<double>(rate.errors), kRateAlpha);
    for (uint64_t idle = std::min(second - rate.second - 1, kMaxIdleSeconds); idle > 0; --idle) {
      rate.rate.add(0, kRateAlpha);
      rate.error_rate.add(0, kRateAlpha);
    }
    rate.second = second;
    rate.requests = rate.errors = 0;
  }
  ++rate.requests;
  bool error = record.status && *record.status >= 500;
  rate.errors += error;
  if (learning(record.ts_ns) || rate.rate.n * kNsPerSecond < options_.learning_ns) return;

  // A spike is far outside the usual spread AND a multiple of the usual level: smooth traffic has a
  // tiny deviation, and a workload that merely got busier (a step of a few tens of percent) is not one.
  auto limit = [&](const Ewma& e, uint64_t floor) {
    return std::max({e.mean + options_.spike_sigmas * std::sqrt(e.var), options_.spike_factor * e.mean,
                     static_cast<double>(floor)});
  };
  // Alert the moment the current second crosses the limit (once: the count only grows).
  double rate_limit = limit(rate.rate, options_.min_spike_rate);
  if (static_cast<double>(rate.requests) > rate_limit && static_cast<double>(rate.requests - 1) <= rate_limit) {
    Alert alert = alertFor(call, "rate_spike", Severity::kMedium);
    alert.summary = *call.caller->identity + " sent " + std::to_string(rate.requests) +
                    " requests in one second; it usually sends " + std::to_string(std::lround(rate.rate.mean));
    alert.evidence = {{"requests_this_second", rate.requests},
                      {"mean_per_second", rate.rate.mean},
                      {"stddev_per_second", std::sqrt(rate.rate.var)},
                      {"last", {{"service", *call.service}, {"method", record.method}, {"route", *call.route}}}};
    alert.dedupe_key = "rate_spike/" + *call.caller->identity;
    raise(std::move(alert));
  }
  double error_limit = limit(rate.error_rate, options_.min_error_spike);
  if (error && static_cast<double>(rate.errors) > error_limit && static_cast<double>(rate.errors - 1) <= error_limit) {
    Alert alert = alertFor(call, "error_spike", Severity::kMedium);
    alert.summary = *call.caller->identity + " got " + std::to_string(rate.errors) +
                    " server errors (5xx) in one second; usually " + std::to_string(std::lround(rate.error_rate.mean));
    alert.evidence = {
        {"errors_this_second", rate.errors},
        {"requests_this_second", rate.requests},
        {"mean_errors_per_second", rate.error_rate.mean},
        {"last",
         {{"service", *call.service}, {"method", record.method}, {"route", *call.route}, {"status", *record.status}}}};
    alert.dedupe_key = "error_spike/" + *call.caller->identity;
    raise(std::move(alert));
  }
}

void DetectionEngine::responseVolume(const Call& call, RouteState* route) {
  const records::HttpRecord& record = *call.record;
  if (!route || !call.primary || !record.status) return;
  Ewma& sizes = route->response_sizes;
  auto bytes = static_cast<double>(record.response_bytes);
  bool learned = !learning(record.ts_ns) && sizes.n >= 20;
  double limit = std::max(static_cast<double>(options_.min_volume_bytes), options_.volume_factor * sizes.mean);
  if (learned && bytes > limit) {
    Alert alert = alertFor(call, "response_volume", Severity::kHigh);
    alert.summary = record.method + " " + *call.route + " of " + *call.service + " answered " +
                    std::to_string(record.response_bytes) + " bytes to " +
                    (call.caller ? *call.caller->identity : "ip:" + record.flow->remote.ip) + "; it usually answers " +
                    std::to_string(std::lround(sizes.mean));
    alert.evidence = {{"response_bytes", record.response_bytes},
                      {"mean_bytes", sizes.mean},
                      {"service", *call.service},
                      {"method", record.method},
                      {"route", *call.route}};
    alert.dedupe_key = "response_volume/" + *call.service + " " + record.method + " " + *call.route;
    raise(std::move(alert));
    return;  // an outlier is not learnt as normal
  }
  sizes.add(bytes, kSizeAlpha);
}

}  // namespace apiwarden::detect
