// Time sources, injected so time-dependent logic is testable without sleeping.
#pragma once

#include <time.h>

#include <chrono>
#include <cstdint>

namespace apiwarden {

class Clock {
 public:
  virtual ~Clock() = default;
  // CLOCK_MONOTONIC in nanoseconds: the clock BPF timestamps (bpf_ktime_get_ns) use.
  virtual uint64_t monotonicNs() const = 0;
  // CLOCK_REALTIME in nanoseconds since the Unix epoch.
  virtual uint64_t realtimeNs() const = 0;
};

class SystemClock final : public Clock {
 public:
  uint64_t monotonicNs() const override { return read(CLOCK_MONOTONIC); }
  uint64_t realtimeNs() const override { return read(CLOCK_REALTIME); }

 private:
  static uint64_t read(clockid_t id) {
    timespec ts{};
    clock_gettime(id, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
  }
};

// Converts kernel monotonic timestamps to wall-clock time with one offset taken at construction.
class WallClockMapper {
 public:
  explicit WallClockMapper(const Clock& clock)
      : offset_ns_(static_cast<int64_t>(clock.realtimeNs()) - static_cast<int64_t>(clock.monotonicNs())) {}
  uint64_t toRealtimeNs(uint64_t monotonic_ns) const {
    return static_cast<uint64_t>(static_cast<int64_t>(monotonic_ns) + offset_ns_);
  }

 private:
  int64_t offset_ns_;
};

}  // namespace apiwarden
