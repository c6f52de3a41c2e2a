#include "agent/flows/reassembler.h"

#include <algorithm>

namespace apiwarden::flows {

StreamReassembler::StreamReassembler(ReassemblerLimits limits) : limits_(limits) {}

void StreamReassembler::push(uint32_t seq, uint32_t payload_len, std::span<const uint8_t> captured,
                             StreamSink& sink) {
  if (payload_len == 0) return;
  captured = captured.first(std::min<size_t>(captured.size(), payload_len));
  if (!next_seq_) next_seq_ = seq;
  // Signed 32-bit distance: correct across sequence-number wrap.
  int64_t relative = static_cast<int32_t>(seq - *next_seq_);
  int64_t start = static_cast<int64_t>(next_offset_) + relative;
  if (start < 0) {  // from before the first byte we saw: trim to the stream start
    uint64_t before = static_cast<uint64_t>(-start);
    if (before >= payload_len) {
      stats_.duplicate_bytes += payload_len;
      return;
    }
    stats_.duplicate_bytes += before;
    captured = captured.subspan(std::min<size_t>(before, captured.size()));
    payload_len -= static_cast<uint32_t>(before);
    start = 0;
  }
  place(static_cast<uint64_t>(start), payload_len, captured, sink);
}

void StreamReassembler::place(uint64_t start, uint32_t payload_len, std::span<const uint8_t> captured,
                              StreamSink& sink) {
  uint64_t end = start + payload_len;
  if (end <= next_offset_) {  // retransmit of delivered bytes
    stats_.duplicate_bytes += payload_len;
    return;
  }
  if (start < next_offset_) {  // overlap: keep only the new tail
    uint64_t overlap = next_offset_ - start;
    stats_.duplicate_bytes += overlap;
    captured = captured.subspan(std::min<size_t>(overlap, captured.size()));
    payload_len -= static_cast<uint32_t>(overlap);
    start = next_offset_;
  }
  if (start == next_offset_) {
    emit(payload_len, captured, sink);
    drainPending(sink);
    return;
  }
  ++stats_.out_of_order_segments;
  auto [it, inserted] = pending_.try_emplace(start);
  if (!inserted && it->second.payload_len >= payload_len) {
    stats_.duplicate_bytes += payload_len;
    return;
  }
  if (!inserted) pending_bytes_ -= it->second.payload_len;
  it->second.payload_len = payload_len;
  it->second.captured.assign(captured.begin(), captured.end());
  pending_bytes_ += payload_len;
  while (pending_bytes_ > limits_.max_pending_bytes || pending_.size() > limits_.max_pending_segments) {
    ++stats_.pending_overflows;
    skipToPending(sink);
  }
}

void StreamReassembler::emit(uint32_t payload_len, std::span<const uint8_t> captured, StreamSink& sink) {
  // Advance first: the sink may call back into code that reads our position.
  next_offset_ += payload_len;
  *next_seq_ += payload_len;
  if (!captured.empty()) sink.onData(captured);
  if (payload_len > captured.size()) {
    stats_.gap_bytes += payload_len - captured.size();
    sink.onGap(payload_len - captured.size());
  }
}

void StreamReassembler::gap(uint64_t bytes, StreamSink& sink) {
  next_offset_ += bytes;
  *next_seq_ += static_cast<uint32_t>(bytes);
  stats_.gap_bytes += bytes;
  sink.onGap(bytes);
}

void StreamReassembler::drainPending(StreamSink& sink) {
  while (!pending_.empty() && pending_.begin()->first <= next_offset_) {
    auto node = pending_.extract(pending_.begin());
    pending_bytes_ -= node.mapped().payload_len;
    place(node.key(), node.mapped().payload_len, node.mapped().captured, sink);
  }
}

void StreamReassembler::skipToPending(StreamSink& sink) {
  if (pending_.empty()) return;
  uint64_t hole = pending_.begin()->first - next_offset_;
  if (hole > 0) gap(hole, sink);
  drainPending(sink);
}

void StreamReassembler::flush(StreamSink& sink) {
  while (!pending_.empty()) skipToPending(sink);
}

}  // namespace apiwarden::flows
