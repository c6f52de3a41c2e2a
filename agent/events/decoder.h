// Turns raw ring-buffer records into typed events. Every record is length- and version-checked
// and copied out with memcpy; what does not check out is counted by reason, never trusted.
#pragma once

#include "apiwarden/abi.h"

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

namespace apiwarden::events {

class EventHandler {
 public:
  virtual ~EventHandler() = default;
  // data holds event.captured_len bytes of payload; valid only during the call.
  virtual void onPayload(const apiwarden_payload_event& event, std::span<const uint8_t> data) = 0;
  virtual void onConnection(const apiwarden_conn_event& event) = 0;
};

enum class RejectReason : uint8_t {
  kShort,           // smaller than the record header, or than its type's fixed part
  kBadVersion,      // ABI version this agent does not speak
  kBadLength,       // header length disagrees with the record's size
  kUnknownType,
  kBadCapturedLength,  // captured_len over the payload length or the capture limit
};
inline constexpr size_t kRejectReasonCount = 5;
std::string_view toString(RejectReason reason);

struct DecoderStats {
  uint64_t decoded = 0;
  std::array<uint64_t, kRejectReasonCount> rejected{};
};

class Decoder {
 public:
  explicit Decoder(EventHandler& handler) : handler_(handler) {}

  void decode(std::span<const uint8_t> record);
  const DecoderStats& stats() const { return stats_; }

 private:
  void reject(RejectReason reason) { ++stats_.rejected[static_cast<size_t>(reason)]; }

  EventHandler& handler_;
  DecoderStats stats_;
};

}  // namespace apiwarden::events
