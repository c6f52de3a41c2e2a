#include "agent/events/decoder.h"

#include <cstring>

namespace apiwarden::events {

std::string_view toString(RejectReason reason) {
  switch (reason) {
    case RejectReason::kShort: return "short";
    case RejectReason::kBadVersion: return "bad_version";
    case RejectReason::kBadLength: return "bad_length";
    case RejectReason::kUnknownType: return "unknown_type";
    case RejectReason::kBadCapturedLength: return "bad_captured_length";
  }
  return "unknown";
}

void Decoder::decode(std::span<const uint8_t> record) {
  apiwarden_record_header header;
  if (record.size() < sizeof(header)) return reject(RejectReason::kShort);
  std::memcpy(&header, record.data(), sizeof(header));
  if (header.version != APIWARDEN_ABI_VERSION) return reject(RejectReason::kBadVersion);
  // The ring buffer rounds record sizes up to 8 bytes; the header's length is the exact one.
  if (header.length < sizeof(header) || header.length > record.size()) return reject(RejectReason::kBadLength);
  record = record.first(header.length);

  switch (header.type) {
    case APIWARDEN_RECORD_PAYLOAD: {
      apiwarden_payload_event event;
      if (record.size() < sizeof(event)) return reject(RejectReason::kShort);
      std::memcpy(&event, record.data(), sizeof(event));
      if (event.captured_len > event.payload_len || event.captured_len > APIWARDEN_CAPTURE_MAX) {
        return reject(RejectReason::kBadCapturedLength);
      }
      if (record.size() != sizeof(event) + event.captured_len) return reject(RejectReason::kBadLength);
      ++stats_.decoded;
      handler_.onPayload(event, record.subspan(sizeof(event)));
      return;
    }
    case APIWARDEN_RECORD_CONN_OPEN:
    case APIWARDEN_RECORD_CONN_CLOSE: {
      apiwarden_conn_event event;
      if (record.size() != sizeof(event)) return reject(RejectReason::kBadLength);
      std::memcpy(&event, record.data(), sizeof(event));
      ++stats_.decoded;
      handler_.onConnection(event);
      return;
    }
    default:
      return reject(RejectReason::kUnknownType);
  }
}

}  // namespace apiwarden::events
