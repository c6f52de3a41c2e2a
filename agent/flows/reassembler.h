// Orders the captured payload of one direction of one TCP stream by sequence number.
//
// Segments come as (seq, payload_len, captured bytes): captured may be shorter than payload_len
// (the kernel copies at most APIWARDEN_CAPTURE_MAX per segment). The reassembler delivers bytes
// in stream order to a sink, reports uncaptured or lost ranges as gaps, drops retransmitted
// bytes, trims overlaps and holds out-of-order segments in a bounded buffer.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

namespace apiwarden::flows {

class StreamSink {
 public:
  virtual ~StreamSink() = default;
  virtual void onData(std::span<const uint8_t> data) = 0;
  virtual void onGap(uint64_t bytes) = 0;  // this many stream bytes will never arrive
};

struct ReassemblerLimits {
  uint32_t max_pending_bytes = 256 * 1024;  // payload bytes (not just captured) held out of order
  uint32_t max_pending_segments = 64;
};

struct ReassemblerStats {
  uint64_t duplicate_bytes = 0;   // already delivered (retransmits, overlaps)
  uint64_t gap_bytes = 0;         // reported through onGap
  uint64_t out_of_order_segments = 0;
  uint64_t pending_overflows = 0; // times the pending buffer forced a gap
};

class StreamReassembler {
 public:
  explicit StreamReassembler(ReassemblerLimits limits = {});

  // The first segment ever pushed defines the start of the stream.
  void push(uint32_t seq, uint32_t payload_len, std::span<const uint8_t> captured, StreamSink& sink);
  // Delivers whatever is pending, with gaps between (used when the connection ends).
  void flush(StreamSink& sink);

  const ReassemblerStats& stats() const { return stats_; }

 private:
  struct Segment {
    uint32_t payload_len;
    std::vector<uint8_t> captured;
  };

  // Delivers or holds a segment that starts at stream offset `start`.
  void place(uint64_t start, uint32_t payload_len, std::span<const uint8_t> captured, StreamSink& sink);
  void emit(uint32_t payload_len, std::span<const uint8_t> captured, StreamSink& sink);
  void gap(uint64_t bytes, StreamSink& sink);
  void drainPending(StreamSink& sink);
  // Gives up on the hole before the earliest pending segment.
  void skipToPending(StreamSink& sink);

  ReassemblerLimits limits_;
  ReassemblerStats stats_;
  std::optional<uint32_t> next_seq_;  // TCP sequence number of the next byte to deliver
  uint64_t next_offset_ = 0;           // the same position as a 64-bit stream offset (no wrap)
  std::map<uint64_t, Segment> pending_;  // out-of-order segments by stream offset
  uint64_t pending_bytes_ = 0;           // sum of their payload_len
};

}  // namespace apiwarden::flows
