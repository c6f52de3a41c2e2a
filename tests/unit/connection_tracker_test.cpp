// ConnectionTracker: payload and connection events in, exact records out.
#include "agent/flows/connection_tracker.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace apiwarden::flows {
namespace {

struct FixedClock final : Clock {
  uint64_t monotonicNs() const override { return 1'000'000'000; }
  uint64_t realtimeNs() const override { return 1'700'000'000'000'000'000; }
};

// Records point to their connection's FlowInfo only during write(): keep a copy of it.
template <typename Record>
struct Kept : Record {
  explicit Kept(const Record& r) : Record(r), info(*r.flow) { this->flow = &info; }
  Kept(const Kept& other) : Record(other), info(other.info) { this->flow = &info; }
  records::FlowInfo info;
};

struct CollectingSink final : records::RecordSink {
  std::vector<Kept<records::HttpRecord>> http;
  std::vector<Kept<records::ConnectionRecord>> connections;
  void write(const records::HttpRecord& r) override { http.emplace_back(r); }
  void write(const records::ConnectionRecord& r) override { connections.emplace_back(r); }
  void flush() override {}
};

apiwarden_flow makeFlow(uint64_t cookie, uint8_t role) {
  apiwarden_flow flow{};
  flow.cgroup_id = 77;
  flow.cookie = cookie;
  flow.local_addr[10] = flow.local_addr[11] = 0xff;
  flow.local_addr[12] = 127;
  flow.local_addr[15] = 1;
  std::memcpy(flow.remote_addr, flow.local_addr, 16);
  flow.local_port = 40000;
  flow.remote_port = 8080;
  flow.family = 2;
  flow.role = role;
  return flow;
}

struct FixedWorkloads final : WorkloadDirectory {
  records::Workload describe(uint64_t cgroup_id) override {
    return {cgroup_id, "/demo/" + std::to_string(cgroup_id)};
  }
  void refresh(records::Workload&) override {}
};

class TrackerTest : public ::testing::Test {
 protected:
  TrackerTest()
      : wall_(clock_),
        fingerprinter_(std::vector<uint8_t>(32, 7)),
        extractor_(fingerprinter_),
        tracker_(sink_, extractor_, workloads_, scope_, wall_) {}

  // One segment of the stream in `direction`, continuing where the previous one left off.
  void segment(const apiwarden_flow& flow, uint8_t direction, const std::string& data, uint64_t ts_ns,
               uint32_t uncaptured = 0, uint8_t flags = 0) {
    apiwarden_payload_event event{};
    event.hdr = {APIWARDEN_RECORD_PAYLOAD, APIWARDEN_ABI_VERSION,
                 static_cast<uint32_t>(sizeof(event) + data.size()), ts_ns};
    event.flow = flow;
    uint32_t& seq = flags & APIWARDEN_PAYLOAD_TLS_PLAINTEXT ? plaintext_seq_[direction] : seq_[direction];
    event.seq = seq;
    event.flags = flags;
    event.payload_len = static_cast<uint32_t>(data.size()) + uncaptured;
    event.captured_len = static_cast<uint32_t>(data.size());
    event.direction = direction;
    seq += event.payload_len;
    tracker_.onPayload(event, {reinterpret_cast<const uint8_t*>(data.data()), data.size()});
  }

  void close(const apiwarden_flow& flow, uint64_t sent, uint64_t received) {
    apiwarden_conn_event event{};
    event.hdr = {APIWARDEN_RECORD_CONN_CLOSE, APIWARDEN_ABI_VERSION, sizeof(event), 9'000'000};
    event.flow = flow;
    event.bytes_sent = sent;
    event.bytes_received = received;
    event.duration_ns = 5'000'000;
    tracker_.onConnection(event);
  }

  FixedClock clock_;
  WallClockMapper wall_;
  CollectingSink sink_;
  credentials::Fingerprinter fingerprinter_;
  credentials::CredentialExtractor extractor_;
  FixedWorkloads workloads_;
  NetworkScope scope_;
  ConnectionTracker tracker_;
  uint32_t seq_[2] = {1000, 5000};
  uint32_t plaintext_seq_[2] = {0, 0};
};

TEST_F(TrackerTest, ClientExchangeBecomesOneRecordWithLatency) {
  auto flow = makeFlow(1, APIWARDEN_ROLE_CLIENT);
  std::string request = "GET /v1/users/7?full=1 HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer abc\r\n\r\n";
  std::string response = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
  segment(flow, APIWARDEN_DIR_EGRESS, request, 1'000'000);
  segment(flow, APIWARDEN_DIR_INGRESS, response, 1'250'000);

  ASSERT_EQ(sink_.http.size(), 1u);
  const auto& r = sink_.http[0];
  EXPECT_EQ(r.flow->direction, records::Direction::kClient);
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.path, "/v1/users/7?full=1");
  EXPECT_EQ(r.host, "api");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.latency_us, 250u);
  EXPECT_EQ(r.request_bytes, request.size());
  EXPECT_EQ(r.response_bytes, response.size());
  EXPECT_EQ(r.credential.scheme, credentials::Scheme::kBearer);
  EXPECT_EQ(r.credential.fingerprint, fingerprinter_.fingerprint("abc"));
  EXPECT_EQ(r.credential.source, "header:authorization");
  EXPECT_EQ(r.flow->workload.cgroup_id, 77u);
  EXPECT_EQ(r.flow->workload.cgroup_path, "/demo/77");
  EXPECT_EQ(r.flow->local.ip, "127.0.0.1");
  EXPECT_EQ(r.flow->remote.port, 8080);
  EXPECT_EQ(r.ts_ns, wall_.toRealtimeNs(1'000'000));
}

TEST_F(TrackerTest, ServerSideReadsRequestsFromIngress) {
  auto flow = makeFlow(2, APIWARDEN_ROLE_SERVER);
  segment(flow, APIWARDEN_DIR_INGRESS, "DELETE /items/3 HTTP/1.1\r\nHost: x\r\n\r\n", 10);
  segment(flow, APIWARDEN_DIR_EGRESS, "HTTP/1.1 204 No Content\r\n\r\n", 20);
  ASSERT_EQ(sink_.http.size(), 1u);
  EXPECT_EQ(sink_.http[0].flow->direction, records::Direction::kServer);
  EXPECT_EQ(sink_.http[0].method, "DELETE");
  EXPECT_EQ(sink_.http[0].status, 204);
}

TEST_F(TrackerTest, PipelinedResponsesPairInOrderAndHeadHasNoBody) {
  auto flow = makeFlow(3, APIWARDEN_ROLE_CLIENT);
  segment(flow, APIWARDEN_DIR_EGRESS,
          "HEAD /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n", 1);
  segment(flow, APIWARDEN_DIR_INGRESS,
          "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"         // HEAD: no body despite the length
          "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnop"
          "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
          2);
  ASSERT_EQ(sink_.http.size(), 3u);
  EXPECT_EQ(sink_.http[0].path, "/a");
  EXPECT_EQ(sink_.http[0].status, 200);
  EXPECT_EQ(sink_.http[1].path, "/b");
  EXPECT_EQ(sink_.http[1].status, 404);
  EXPECT_EQ(sink_.http[2].path, "/c");
  EXPECT_EQ(sink_.http[2].status, 200);
}

TEST_F(TrackerTest, UncapturedBodyBytesAreSkippedAndCounted) {
  auto flow = makeFlow(4, APIWARDEN_ROLE_CLIENT);
  segment(flow, APIWARDEN_DIR_EGRESS, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n", 1);
  std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n";
  segment(flow, APIWARDEN_DIR_INGRESS, head + std::string(16384 - head.size(), 'x'), 2, 50000 - (16384 - head.size()));
  segment(flow, APIWARDEN_DIR_EGRESS, "GET /next HTTP/1.1\r\nHost: h\r\n\r\n", 3);
  segment(flow, APIWARDEN_DIR_INGRESS, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 4);
  ASSERT_EQ(sink_.http.size(), 2u);
  EXPECT_EQ(sink_.http[0].response_bytes, head.size() + 50000);
  EXPECT_EQ(sink_.http[1].path, "/next");
  EXPECT_EQ(sink_.http[1].status, 200);
}

TEST_F(TrackerTest, CloseWritesUnansweredRequestsAndTheConnectionRecord) {
  auto flow = makeFlow(5, APIWARDEN_ROLE_CLIENT);
  segment(flow, APIWARDEN_DIR_EGRESS, "GET /ok HTTP/1.1\r\nHost: h\r\n\r\n", 1);
  segment(flow, APIWARDEN_DIR_INGRESS, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2);
  segment(flow, APIWARDEN_DIR_EGRESS, "GET /hang HTTP/1.1\r\nHost: h\r\n\r\n", 3);
  close(flow, 123, 456);
  ASSERT_EQ(sink_.http.size(), 2u);
  EXPECT_EQ(sink_.http[1].path, "/hang");
  EXPECT_FALSE(sink_.http[1].status.has_value());
  EXPECT_EQ(tracker_.stats().unanswered_requests, 1u);
  ASSERT_EQ(sink_.connections.size(), 1u);
  const auto& c = sink_.connections[0];
  EXPECT_EQ(c.bytes_sent, 123u);
  EXPECT_EQ(c.bytes_received, 456u);
  EXPECT_EQ(c.duration_us, 5000u);
  EXPECT_EQ(c.http_requests, 2u);
  EXPECT_EQ(tracker_.size(), 0u);
}

TEST_F(TrackerTest, ResponseDelimitedByCloseCompletesOnClose) {
  auto flow = makeFlow(6, APIWARDEN_ROLE_CLIENT);
  segment(flow, APIWARDEN_DIR_EGRESS, "GET /stream HTTP/1.0\r\n\r\n", 1);
  segment(flow, APIWARDEN_DIR_INGRESS, "HTTP/1.0 200 OK\r\n\r\nall of it", 2);
  EXPECT_TRUE(sink_.http.empty());
  close(flow, 0, 0);
  ASSERT_EQ(sink_.http.size(), 1u);
  EXPECT_EQ(sink_.http[0].status, 200);
  EXPECT_EQ(sink_.http[0].version, "1.0");
  EXPECT_EQ(sink_.http[0].response_bytes, std::string("HTTP/1.0 200 OK\r\n\r\nall of it").size());
}

TEST_F(TrackerTest, UnknownRoleIsInferredFromTheFirstPayload) {
  auto flow = makeFlow(7, APIWARDEN_ROLE_UNKNOWN);  // predates the agent
  segment(flow, APIWARDEN_DIR_INGRESS, "GET /late HTTP/1.1\r\nHost: h\r\n\r\n", 1);
  segment(flow, APIWARDEN_DIR_EGRESS, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2);
  ASSERT_EQ(sink_.http.size(), 1u);
  EXPECT_EQ(sink_.http[0].flow->direction, records::Direction::kServer);
}

TEST_F(TrackerTest, CloseOfAConnectionNeverSeenStillGivesItsRecord) {
  close(makeFlow(8, APIWARDEN_ROLE_SERVER), 10, 20);
  ASSERT_EQ(sink_.connections.size(), 1u);
  EXPECT_EQ(sink_.connections[0].flow->direction, records::Direction::kServer);
  EXPECT_EQ(sink_.connections[0].bytes_received, 20u);
}

TEST_F(TrackerTest, BothEndsOfANodeLocalCallNameEachOther) {
  auto client = makeFlow(20, APIWARDEN_ROLE_CLIENT);  // 127.0.0.1:40000 -> 127.0.0.1:8080, cgroup 77
  auto server = makeFlow(21, APIWARDEN_ROLE_SERVER);
  server.cgroup_id = 88;
  std::swap(server.local_port, server.remote_port);
  segment(client, APIWARDEN_DIR_EGRESS, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n", 1);
  seq_[APIWARDEN_DIR_EGRESS] = 1000;
  seq_[APIWARDEN_DIR_INGRESS] = 5000;
  segment(server, APIWARDEN_DIR_INGRESS, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n", 2);
  segment(server, APIWARDEN_DIR_EGRESS, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 3);
  seq_[APIWARDEN_DIR_INGRESS] = 5000;
  segment(client, APIWARDEN_DIR_INGRESS, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 4);
  ASSERT_EQ(sink_.http.size(), 2u);
  const auto& on_server = sink_.http[0].info;
  const auto& on_client = sink_.http[1].info;
  ASSERT_TRUE(on_server.peer.workload);
  ASSERT_TRUE(on_client.peer.workload);
  EXPECT_EQ(on_server.peer.workload->cgroup_id, 77u);
  EXPECT_EQ(on_client.peer.workload->cgroup_id, 88u);
  EXPECT_EQ(on_client.peer.scope, "node");
}

TEST_F(TrackerTest, TlsPlaintextIsParsedAndTheWireIsNot) {
  auto flow = makeFlow(9, APIWARDEN_ROLE_CLIENT);
  const uint8_t plaintext = APIWARDEN_PAYLOAD_TLS_PLAINTEXT;
  // Wire: a TLS handshake record then application data, which must never reach the HTTP parsers.
  segment(flow, APIWARDEN_DIR_EGRESS, std::string("\x16\x03\x01\x00\x05hello", 10), 1'000'000);
  segment(flow, APIWARDEN_DIR_EGRESS, std::string("\x17\x03\x03\x00\x04GET ", 9), 1'100'000);
  segment(flow, APIWARDEN_DIR_EGRESS, "GET /secure HTTP/1.1\r\nHost: api\r\n\r\n", 1'100'000, 0, plaintext);
  segment(flow, APIWARDEN_DIR_INGRESS, "HTTP/1.1 204 No Content\r\n\r\n", 1'400'000, 0, plaintext);

  ASSERT_EQ(sink_.http.size(), 1u);
  const auto& r = sink_.http[0];
  EXPECT_EQ(r.path, "/secure");
  EXPECT_EQ(r.status, 204);
  EXPECT_EQ(r.latency_us, 300u);
  ASSERT_TRUE(r.flow->tls);
  EXPECT_TRUE(r.flow->tls->intercepted);
  EXPECT_EQ(tracker_.stats().parse_errors[static_cast<int>(http::ParseError::kBadStartLine)], 0u);
}

TEST_F(TrackerTest, IdleConnectionsAreSwept) {
  segment(makeFlow(9, APIWARDEN_ROLE_CLIENT), APIWARDEN_DIR_EGRESS, "GET / HTTP/1.1\r\n\r\n", 1);
  EXPECT_EQ(tracker_.size(), 1u);
  tracker_.sweep(1 + 601'000'000'000ULL);
  EXPECT_EQ(tracker_.size(), 0u);
  EXPECT_EQ(tracker_.stats().idle_evicted, 1u);
}

TEST(FormatAddress, EveryIpv4OctetWidthAndIpv6) {
  auto v4 = [](uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    uint8_t addr[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d};
    return formatAddress(addr);
  };
  EXPECT_EQ(v4(0, 0, 0, 0), "0.0.0.0");
  EXPECT_EQ(v4(127, 0, 0, 1), "127.0.0.1");
  EXPECT_EQ(v4(10, 9, 100, 255), "10.9.100.255");
  EXPECT_EQ(v4(255, 255, 255, 255), "255.255.255.255");
  for (int octet = 0; octet < 256; ++octet) {
    EXPECT_EQ(v4(1, static_cast<uint8_t>(octet), 2, 3), "1." + std::to_string(octet) + ".2.3");
  }
  uint8_t loopback6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  EXPECT_EQ(formatAddress(loopback6), "::1");
  uint8_t doc6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42};
  EXPECT_EQ(formatAddress(doc6), "2001:db8::42");
}

}  // namespace
}  // namespace apiwarden::flows
