// The real capture programs run by the kernel (BPF_PROG_TEST_RUN) over synthetic packets:
// exact records out of the ring buffer and exact counter deltas, case by case.
#include "apiwarden/abi.h"
#include "apiwarden_bpf.skel.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Bytes = std::vector<uint8_t>;

struct Packet {
  bool ipv6 = false;
  uint8_t protocol = 6;  // TCP
  std::string src = "10.1.0.1", dst = "10.2.0.2";
  uint16_t sport = 40000, dport = 8080;
  uint32_t seq = 1000;
  uint8_t ip_options = 0;   // 4-byte words
  uint8_t tcp_options = 0;  // 4-byte words
  bool more_fragments = false;
  std::string payload;
};

void put16(Bytes& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}
void put32(Bytes& b, uint32_t v) {
  put16(b, static_cast<uint16_t>(v >> 16));
  put16(b, static_cast<uint16_t>(v));
}

uint16_t checksum(const uint8_t* p, size_t n) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// Ethernet + IPv4/IPv6 + TCP (or a UDP header) + payload. Checksums of L4 are not checked here.
Bytes build(const Packet& p) {
  Bytes frame(12, 0x02);
  put16(frame, p.ipv6 ? 0x86dd : 0x0800);
  size_t l4_len = (p.protocol == 6 ? 20 + p.tcp_options * 4 : 8) + p.payload.size();
  if (!p.ipv6) {
    size_t ip_start = frame.size(), ihl = 5 + p.ip_options;
    frame.push_back(static_cast<uint8_t>(0x40 | ihl));
    frame.push_back(0);
    put16(frame, static_cast<uint16_t>(ihl * 4 + l4_len));
    put16(frame, 1);
    put16(frame, p.more_fragments ? 0x2000 : 0x4000);
    frame.push_back(64);
    frame.push_back(p.protocol);
    put16(frame, 0);
    in_addr a{}, b{};
    inet_pton(AF_INET, p.src.c_str(), &a);
    inet_pton(AF_INET, p.dst.c_str(), &b);
    frame.insert(frame.end(), reinterpret_cast<uint8_t*>(&a), reinterpret_cast<uint8_t*>(&a) + 4);
    frame.insert(frame.end(), reinterpret_cast<uint8_t*>(&b), reinterpret_cast<uint8_t*>(&b) + 4);
    frame.insert(frame.end(), p.ip_options * 4, 1);  // NOP options
    uint16_t sum = checksum(frame.data() + ip_start, ihl * 4);
    frame[ip_start + 10] = static_cast<uint8_t>(sum >> 8);
    frame[ip_start + 11] = static_cast<uint8_t>(sum);
  } else {
    put32(frame, 0x60000000);
    put16(frame, static_cast<uint16_t>(l4_len));
    frame.push_back(p.protocol);
    frame.push_back(64);
    in6_addr a{}, b{};
    inet_pton(AF_INET6, p.src.c_str(), &a);
    inet_pton(AF_INET6, p.dst.c_str(), &b);
    frame.insert(frame.end(), a.s6_addr, a.s6_addr + 16);
    frame.insert(frame.end(), b.s6_addr, b.s6_addr + 16);
  }
  put16(frame, p.sport);
  put16(frame, p.dport);
  if (p.protocol == 6) {
    put32(frame, p.seq);
    put32(frame, 1);
    frame.push_back(static_cast<uint8_t>((5 + p.tcp_options) << 4));
    frame.push_back(0x18);  // PSH|ACK
    put16(frame, 65535);
    put16(frame, 0);
    put16(frame, 0);
    frame.insert(frame.end(), p.tcp_options * 4, 1);
  } else {
    put16(frame, static_cast<uint16_t>(l4_len));
    put16(frame, 0);
  }
  frame.insert(frame.end(), p.payload.begin(), p.payload.end());
  return frame;
}

std::array<uint8_t, 16> mapped(const std::string& ip) {
  std::array<uint8_t, 16> out{};
  if (ip.find(':') != std::string::npos) {
    inet_pton(AF_INET6, ip.c_str(), out.data());
  } else {
    out[10] = out[11] = 0xff;
    inet_pton(AF_INET, ip.c_str(), out.data() + 12);
  }
  return out;
}

struct Captured {
  apiwarden_payload_event event;
  std::string data;
};

class CaptureProgramTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    skel_ = apiwarden_bpf__open_and_load();
    ASSERT_NE(skel_, nullptr) << "loading the programs failed: " << strerror(errno);
    ring_ = ring_buffer__new(bpf_map__fd(skel_->maps.apiwarden_events), &CaptureProgramTest::collect, this, nullptr);
    ASSERT_NE(ring_, nullptr);
  }
  void TearDown() override {
    if (ring_) ring_buffer__free(ring_);
    if (skel_) apiwarden_bpf__destroy(skel_);
  }

  static int collect(void* ctx, void* data, size_t size) {
    auto* self = static_cast<CaptureProgramTest*>(ctx);
    Captured c{};
    std::memcpy(&c.event, data, sizeof(c.event));
    c.data.assign(static_cast<const char*>(data) + sizeof(c.event), size - sizeof(c.event));
    self->captured_.push_back(c);
    return 0;
  }

  std::array<uint64_t, APIWARDEN_STAT_MAX> stats() {
    std::array<uint64_t, APIWARDEN_STAT_MAX> totals{};
    std::vector<uint64_t> values(static_cast<size_t>(libbpf_num_possible_cpus()));
    for (uint32_t key = 0; key < APIWARDEN_STAT_MAX; ++key) {
      EXPECT_EQ(bpf_map_lookup_elem(bpf_map__fd(skel_->maps.apiwarden_stats), &key, values.data()), 0);
      for (uint64_t v : values) totals[key] += v;
    }
    return totals;
  }

  // Runs one program over one packet; returns the records and the counter deltas.
  std::vector<Captured> run(bool egress, const Packet& packet, std::array<uint64_t, APIWARDEN_STAT_MAX>& delta) {
    auto before = stats();
    Bytes frame = build(packet);
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(), .data_size_in = static_cast<uint32_t>(frame.size()));
    bpf_program* prog = egress ? skel_->progs.apiwarden_capture_egress : skel_->progs.apiwarden_capture_ingress;
    EXPECT_EQ(bpf_prog_test_run_opts(bpf_program__fd(prog), &opts), 0) << strerror(errno);
    EXPECT_EQ(opts.retval, 1u) << "capture must always pass the packet";
    captured_.clear();
    ring_buffer__consume(ring_);
    auto after = stats();
    for (size_t i = 0; i < delta.size(); ++i) delta[i] = after[i] - before[i];
    return captured_;
  }

  apiwarden_bpf* skel_ = nullptr;
  ring_buffer* ring_ = nullptr;
  std::vector<Captured> captured_;
};

TEST_F(CaptureProgramTest, HttpRequestEgressIsCopiedWithItsFlow) {
  Packet p;
  p.payload = "GET /users/1 HTTP/1.1\r\nHost: api\r\n\r\n";
  std::array<uint64_t, APIWARDEN_STAT_MAX> delta{};
  auto records = run(true, p, delta);
  ASSERT_EQ(records.size(), 1u);
  const auto& e = records[0].event;
  EXPECT_EQ(e.hdr.type, APIWARDEN_RECORD_PAYLOAD);
  EXPECT_EQ(e.hdr.version, APIWARDEN_ABI_VERSION);
  EXPECT_EQ(e.hdr.length, sizeof(e) + p.payload.size());
  EXPECT_EQ(std::memcmp(e.flow.local_addr, mapped(p.src).data(), 16), 0);
  EXPECT_EQ(std::memcmp(e.flow.remote_addr, mapped(p.dst).data(), 16), 0);
  EXPECT_EQ(e.flow.local_port, 40000);
  EXPECT_EQ(e.flow.remote_port, 8080);
  EXPECT_EQ(e.flow.family, AF_INET);
  EXPECT_EQ(e.flow.role, APIWARDEN_ROLE_UNKNOWN);  // the test socket never went through sock_ops
  EXPECT_EQ(e.seq, 1000u);
  EXPECT_EQ(e.payload_len, p.payload.size());
  EXPECT_EQ(e.captured_len, p.payload.size());
  EXPECT_EQ(e.direction, APIWARDEN_DIR_EGRESS);
  EXPECT_EQ(e.flags, 0);
  EXPECT_EQ(records[0].data, p.payload);
  EXPECT_EQ(delta[APIWARDEN_STAT_RECORDS], 1u);
  EXPECT_EQ(delta[APIWARDEN_STAT_UNPARSED], 0u);
}

TEST_F(CaptureProgramTest, ResponseIngressSwapsLocalAndRemote) {
  Packet p;
  p.src = "10.2.0.2";
  p.dst = "10.1.0.1";
  p.sport = 8080;
  p.dport = 40000;
  p.payload = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  std::array<uint64_t, APIWARDEN_STAT_MAX> delta{};
  auto records = run(false, p, delta);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].event.direction, APIWARDEN_DIR_INGRESS);
  EXPECT_EQ(std::memcmp(records[0].event.flow.local_addr, mapped("10.1.0.1").data(), 16), 0);
  EXPECT_EQ(records[0].event.flow.local_port, 40000);
  EXPECT_EQ(records[0].event.flow.remote_port, 8080);
  EXPECT_EQ(records[0].data, p.payload);
}

TEST_F(CaptureProgramTest, Ipv6Request) {
  Packet p;
  p.ipv6 = true;
  p.src = "fd00::1";
  p.dst = "fd00::2";
  p.payload = "DELETE /items/9 HTTP/1.1\r\n\r\n";
  std::array<uint64_t, APIWARDEN_STAT_MAX> delta{};
  auto records = run(true, p, delta);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].event.flow.family, AF_INET6);
  EXPECT_EQ(std::memcmp(records[0].event.flow.remote_addr, mapped("fd00::2").data(), 16), 0);
  EXPECT_EQ(records[0].data, p.payload);
}

TEST_F(CaptureProgramTest, TlsHandshakeIsCopied) {
  Packet p;
  p.payload = std::string("\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", 10);
  std::array<uint64_t, APIWARDEN_STAT_MAX> delta{};
  auto records = run(true, p, delta);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].data, p.payload);
}

TEST_F(CaptureProgramTest, WholeThreeKilobytePayload) {
  Packet p;
  p.payload = "POST /upload HTTP/1.1\r\nContent-Length: 2960\r\n\r\n";
  p.payload += std::string(3000 - p.payload.size(), 'z');
  std::array<uint64_t, APIWARDEN_STAT_MAX> delta{};
  auto records = run(true, p, delta);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].event.captured_len, 3000u);
  EXPECT_EQ(records[0].data, p.payload);
}

TEST_F(CaptureProgramTest, IpAndTcpOptionsMoveThePayload) {
  Packet p;
  p.ip_options = 1;
  p.tcp_options = 3;
  p.payload = "GET /opt HTTP/1.1\r\n\r\n";
  std::array<uint64_t, APIWARDEN_STAT_MAX> delta{};
  auto records = run(true, p, delta);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].data, p.payload);
}

struct Ignored {
  const char* name;
  Packet packet;
  int stat;  // the counter that must move by one, or -1 for none
};

TEST_F(CaptureProgramTest, PacketsThatAreNotCopied) {
  Packet udp;
  udp.protocol = 17;
  udp.payload = "GET / HTTP/1.1\r\n\r\n";
  Packet ack;  // no payload
  Packet fragment;
  fragment.more_fragments = true;
  fragment.payload = "GET / HTTP/1.1\r\n\r\n";
  Packet ssh;
  ssh.payload = "SSH-2.0-OpenSSH_9.2\r\n";
  for (const auto& c : {Ignored{"udp", udp, -1}, Ignored{"pure ack", ack, -1},
                        Ignored{"fragment", fragment, APIWARDEN_STAT_UNPARSED},
                        Ignored{"ssh banner", ssh, APIWARDEN_STAT_SKIPPED_OPAQUE}}) {
    std::array<uint64_t, APIWARDEN_STAT_MAX> delta{};
    EXPECT_TRUE(run(true, c.packet, delta).empty()) << c.name;
    for (int stat = 0; stat < APIWARDEN_STAT_MAX; ++stat) {
      EXPECT_EQ(delta[stat], stat == c.stat ? 1u : 0u) << c.name << " stat " << stat;
    }
  }
}

// BPF_PROG_TEST_RUN itself refuses frames with a cut IPv4 header (EINVAL), so cut the TCP header.
TEST_F(CaptureProgramTest, TruncatedTcpHeaderIsCountedUnparsed) {
  Bytes frame = build(Packet{});
  frame.resize(14 + 20 + 8);  // Ethernet + IPv4 + 8 of the 20 bytes of a TCP header
  auto before = stats();
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(), .data_size_in = static_cast<uint32_t>(frame.size()));
  ASSERT_EQ(bpf_prog_test_run_opts(bpf_program__fd(skel_->progs.apiwarden_capture_egress), &opts), 0);
  EXPECT_EQ(opts.retval, 1u);
  EXPECT_EQ(stats()[APIWARDEN_STAT_UNPARSED] - before[APIWARDEN_STAT_UNPARSED], 1u);
}

}  // namespace
