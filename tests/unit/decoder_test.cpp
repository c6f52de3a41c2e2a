// Decoder: every malformed record is rejected and counted by reason, valid ones reach the handler.
#include "agent/events/decoder.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace apiwarden::events {
namespace {

struct Recorder final : EventHandler {
  std::vector<std::string> payloads;
  std::vector<uint16_t> connections;
  void onPayload(const apiwarden_payload_event&, std::span<const uint8_t> data) override {
    payloads.emplace_back(data.begin(), data.end());
  }
  void onConnection(const apiwarden_conn_event& event) override { connections.push_back(event.hdr.type); }
};

std::vector<uint8_t> payloadRecord(const std::string& data, uint32_t payload_len) {
  apiwarden_payload_event event{};
  event.hdr = {APIWARDEN_RECORD_PAYLOAD, APIWARDEN_ABI_VERSION, static_cast<uint32_t>(sizeof(event) + data.size()), 1};
  event.captured_len = static_cast<uint32_t>(data.size());
  event.payload_len = payload_len;
  std::vector<uint8_t> bytes(sizeof(event) + data.size());
  std::memcpy(bytes.data(), &event, sizeof(event));
  std::memcpy(bytes.data() + sizeof(event), data.data(), data.size());
  return bytes;
}

std::vector<uint8_t> connRecord(uint16_t type) {
  apiwarden_conn_event event{};
  event.hdr = {type, APIWARDEN_ABI_VERSION, sizeof(event), 1};
  std::vector<uint8_t> bytes(sizeof(event));
  std::memcpy(bytes.data(), &event, sizeof(event));
  return bytes;
}

uint64_t rejected(const Decoder& decoder, RejectReason reason) {
  return decoder.stats().rejected[static_cast<size_t>(reason)];
}

TEST(Decoder, DeliversPayloadAndConnectionRecords) {
  Recorder recorder;
  Decoder decoder(recorder);
  decoder.decode(payloadRecord("GET / HTTP/1.1\r\n", 16));
  decoder.decode(connRecord(APIWARDEN_RECORD_CONN_OPEN));
  decoder.decode(connRecord(APIWARDEN_RECORD_CONN_CLOSE));
  ASSERT_EQ(recorder.payloads.size(), 1u);
  EXPECT_EQ(recorder.payloads[0], "GET / HTTP/1.1\r\n");
  EXPECT_EQ(recorder.connections, (std::vector<uint16_t>{APIWARDEN_RECORD_CONN_OPEN, APIWARDEN_RECORD_CONN_CLOSE}));
  EXPECT_EQ(decoder.stats().decoded, 3u);
}

TEST(Decoder, TrailingRingBufferPaddingIsIgnored) {
  Recorder recorder;
  Decoder decoder(recorder);
  auto bytes = payloadRecord("abc", 3);
  bytes.resize(bytes.size() + 5, 0xee);  // the header's length is the exact one
  decoder.decode(bytes);
  ASSERT_EQ(recorder.payloads.size(), 1u);
  EXPECT_EQ(recorder.payloads[0], "abc");
}

TEST(Decoder, RejectsEachMalformationByReason) {
  Recorder recorder;
  Decoder decoder(recorder);

  decoder.decode(std::vector<uint8_t>(7, 0));  // shorter than a header
  EXPECT_EQ(rejected(decoder, RejectReason::kShort), 1u);

  auto bad_version = payloadRecord("x", 1);
  bad_version[2] = 99;
  decoder.decode(bad_version);
  EXPECT_EQ(rejected(decoder, RejectReason::kBadVersion), 1u);

  auto long_claim = payloadRecord("x", 1);
  uint32_t too_long = static_cast<uint32_t>(long_claim.size() + 1);
  std::memcpy(long_claim.data() + 4, &too_long, 4);
  decoder.decode(long_claim);
  EXPECT_EQ(rejected(decoder, RejectReason::kBadLength), 1u);

  auto unknown = connRecord(77);
  decoder.decode(unknown);
  EXPECT_EQ(rejected(decoder, RejectReason::kUnknownType), 1u);

  decoder.decode(payloadRecord("abcd", 2));  // captured more than the segment held
  EXPECT_EQ(rejected(decoder, RejectReason::kBadCapturedLength), 1u);

  auto short_conn = connRecord(APIWARDEN_RECORD_CONN_CLOSE);
  short_conn.resize(sizeof(apiwarden_conn_event) - 8);
  uint32_t shorter = static_cast<uint32_t>(short_conn.size());
  std::memcpy(short_conn.data() + 4, &shorter, 4);
  decoder.decode(short_conn);
  EXPECT_EQ(rejected(decoder, RejectReason::kBadLength), 2u);

  EXPECT_TRUE(recorder.payloads.empty());
  EXPECT_TRUE(recorder.connections.empty());
  EXPECT_EQ(decoder.stats().decoded, 0u);
}

TEST(Decoder, RandomBytesNeverReachTheHandlerUnchecked) {
  Recorder recorder;
  Decoder decoder(recorder);
  uint32_t state = 12345;
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint8_t> bytes(state % 300);
    for (auto& b : bytes) {
      state = state * 1103515245 + 12345;
      b = static_cast<uint8_t>(state >> 16);
    }
    decoder.decode(bytes);
  }
  uint64_t total = decoder.stats().decoded;
  for (auto count : decoder.stats().rejected) total += count;
  EXPECT_EQ(total, 20000u);
}

}  // namespace
}  // namespace apiwarden::events
