// The capture programs (bpf/progs/capture.bpf.c) run by the kernel through BPF_PROG_TEST_RUN over
// synthetic Ethernet frames. Each case checks the verdict, every field of every record read back
// from the ring buffer, and the delta of every counter.
//
// What BPF_PROG_TEST_RUN gives a cgroup_skb program (measured on 6.18):
// - skb->sk is never NULL: each run gets a new dummy full socket, allocated in the caller's cgroup
//   v2 and freed after the run. Socket storage never outlives a run, so every run is the first
//   payload of a socket sock_ops never saw (role UNKNOWN, established_ns 0). The per-socket limits
//   (APIWARDEN_TLS_SEGMENTS, APIWARDEN_PROBE_SEGMENTS, sticky classes) cannot be reached here.
// - the Ethernet header is stripped: the program sees the IP header first, as at the real hooks.
// - frames with less than a whole IPv4 (20 bytes) or IPv6 (40 bytes) header are refused with
//   EINVAL before the program runs, and so are frames over one page (3712 bytes here): a payload
//   over APIWARDEN_CAPTURE_MAX cannot be built, so truncation is not covered by these tests.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "apiwarden/abi.h"
#include "apiwarden_bpf.skel.h"

namespace {

using Bytes = std::vector<uint8_t>;

constexpr uint8_t kTcp = 6, kUdp = 17;
constexpr uint8_t kFin = 0x01, kSyn = 0x02, kPsh = 0x08, kAck = 0x10;
constexpr uint16_t kDontFragment = 0x4000, kMoreFragments = 0x2000;
constexpr uint32_t kSeq = 0x11223344;
constexpr size_t kEthernetLen = 14;

struct Endpoint {
  std::string addr;
  uint16_t port;
};
const Endpoint kClient4{"10.1.0.1", 40000}, kServer4{"10.2.0.2", 8080};
const Endpoint kClient6{"fd00:1::1", 40001}, kServer6{"fd00:2::2", 443};

bool isV6(const std::string& addr) { return addr.find(':') != std::string::npos; }

// The address as the records store it: IPv4 v4-mapped (::ffff:a.b.c.d).
std::array<uint8_t, 16> recordAddr(const std::string& addr) {
  std::array<uint8_t, 16> out{};
  if (isV6(addr)) {
    EXPECT_EQ(inet_pton(AF_INET6, addr.c_str(), out.data()), 1) << addr;
  } else {
    out[10] = out[11] = 0xff;
    EXPECT_EQ(inet_pton(AF_INET, addr.c_str(), out.data() + 12), 1) << addr;
  }
  return out;
}

// Record addresses as text (IPv4 shows as ::ffff:a.b.c.d), so a failure reads as addresses.
std::string addrText(const uint8_t* addr16) {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(AF_INET6, addr16, text, sizeof(text));
  return text;
}

Bytes wireAddr(const std::string& addr) {
  auto mapped = recordAddr(addr);
  return isV6(addr) ? Bytes(mapped.begin(), mapped.end()) : Bytes(mapped.begin() + 12, mapped.end());
}

std::string raw(std::initializer_list<int> bytes) {
  std::string out;
  for (int b : bytes) out.push_back(static_cast<char>(b));
  return out;
}

// One frame to build. Defaults: a client's IPv4 PSH|ACK segment with DF set and no options.
struct Segment {
  Endpoint from = kClient4, to = kServer4;
  uint8_t l4_protocol = kTcp;
  uint8_t tcp_flags = kPsh | kAck;
  uint32_t seq = kSeq;
  uint16_t frag_field = kDontFragment;  // IPv4 flags + fragment offset, host order
  std::string ip_options;               // IPv4, a multiple of 4 bytes
  std::string tcp_options;              // a multiple of 4 bytes
  std::optional<uint8_t> ihl;           // IPv4 header length in words, when it must lie
  std::optional<uint8_t> doff;          // TCP data offset in words, when it must lie
  std::optional<size_t> l3_bytes;       // cut the frame to this many bytes after Ethernet
  std::string payload;
};

void put16(Bytes& b, size_t at, uint16_t v) {
  b[at] = static_cast<uint8_t>(v >> 8);
  b[at + 1] = static_cast<uint8_t>(v);
}
void append16(Bytes& b, uint16_t v) {
  b.resize(b.size() + 2);
  put16(b, b.size() - 2, v);
}
void append32(Bytes& b, uint32_t v) {
  append16(b, static_cast<uint16_t>(v >> 16));
  append16(b, static_cast<uint16_t>(v));
}
void append(Bytes& b, const std::string& s) { b.insert(b.end(), s.begin(), s.end()); }
void append(Bytes& b, const Bytes& s) { b.insert(b.end(), s.begin(), s.end()); }

// RFC 1071 ones' complement sum of 16-bit big-endian words, folded and complemented.
uint16_t checksum(const Bytes& data) {
  uint32_t sum = 0;
  for (size_t i = 0; i < data.size(); i += 2) {
    sum += static_cast<uint32_t>(data[i]) << 8 | (i + 1 < data.size() ? data[i + 1] : 0);
  }
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

Bytes transportSegment(const Segment& s) {
  Bytes l4;
  append16(l4, s.from.port);
  append16(l4, s.to.port);
  if (s.l4_protocol == kUdp) {
    append16(l4, static_cast<uint16_t>(8 + s.payload.size()));
    append16(l4, 0);  // checksum, below
  } else {
    append32(l4, s.seq);
    append32(l4, 0x55667788);  // ack
    l4.push_back(static_cast<uint8_t>(s.doff.value_or((20 + s.tcp_options.size()) / 4) << 4));
    l4.push_back(s.tcp_flags);
    append16(l4, 64240);  // window
    append16(l4, 0);      // checksum, below
    append16(l4, 0);      // urgent pointer
    append(l4, s.tcp_options);
  }
  append(l4, s.payload);
  return l4;
}

Bytes buildFrame(const Segment& s) {
  const bool v6 = isV6(s.from.addr);
  const Bytes src = wireAddr(s.from.addr), dst = wireAddr(s.to.addr);
  Bytes l4 = transportSegment(s);

  Bytes pseudo = src;  // the L4 checksum covers a pseudo-header
  append(pseudo, dst);
  if (v6) {
    append32(pseudo, static_cast<uint32_t>(l4.size()));
    append32(pseudo, s.l4_protocol);
  } else {
    append16(pseudo, s.l4_protocol);
    append16(pseudo, static_cast<uint16_t>(l4.size()));
  }
  append(pseudo, l4);
  put16(l4, s.l4_protocol == kUdp ? 6 : 16, checksum(pseudo));

  Bytes ip;
  if (v6) {
    append32(ip, 0x60000000);
    append16(ip, static_cast<uint16_t>(l4.size()));
    ip.push_back(s.l4_protocol);
    ip.push_back(64);  // hop limit
  } else {
    const size_t header_len = 20 + s.ip_options.size();
    ip.push_back(static_cast<uint8_t>(0x40 | s.ihl.value_or(header_len / 4)));
    ip.push_back(0);
    append16(ip, static_cast<uint16_t>(header_len + l4.size()));
    append16(ip, 0x1234);  // id
    append16(ip, s.frag_field);
    ip.push_back(64);  // ttl
    ip.push_back(s.l4_protocol);
    append16(ip, 0);  // checksum, below
  }
  append(ip, src);
  append(ip, dst);
  if (!v6) {
    append(ip, s.ip_options);
    put16(ip, 10, checksum(ip));
  }

  Bytes frame = {0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01};  // dst MAC, src MAC
  append16(frame, v6 ? 0x86dd : 0x0800);
  append(frame, ip);
  append(frame, l4);
  if (s.l3_bytes) frame.resize(kEthernetLen + *s.l3_bytes);
  return frame;
}

// Every counter of enum apiwarden_stat, by name.
struct Counters {
  uint64_t records = 0, lost_ringbuf = 0, lost_truncated = 0, lost_map_full = 0, skipped_opaque = 0, unparsed = 0;
  bool operator==(const Counters&) const = default;
};
std::ostream& operator<<(std::ostream& os, const Counters& c) {
  return os << "{records=" << c.records << " lost_ringbuf=" << c.lost_ringbuf << " lost_truncated=" << c.lost_truncated
            << " lost_map_full=" << c.lost_map_full << " skipped_opaque=" << c.skipped_opaque
            << " unparsed=" << c.unparsed << "}";
}
Counters operator-(const Counters& a, const Counters& b) {
  return {a.records - b.records,
          a.lost_ringbuf - b.lost_ringbuf,
          a.lost_truncated - b.lost_truncated,
          a.lost_map_full - b.lost_map_full,
          a.skipped_opaque - b.skipped_opaque,
          a.unparsed - b.unparsed};
}

// A record as the owner of the socket sees the segment: the viewpoint decides local and remote.
struct ExpectedRecord {
  uint8_t direction;
  Endpoint local, remote;
  uint32_t seq;
  std::string bytes;  // the whole payload: nothing here is long enough to be truncated
};

ExpectedRecord sent(const Segment& s) { return {APIWARDEN_DIR_EGRESS, s.from, s.to, s.seq, s.payload}; }
ExpectedRecord received(const Segment& s) { return {APIWARDEN_DIR_INGRESS, s.to, s.from, s.seq, s.payload}; }

enum class Hook { kEgress, kIngress };

struct Case {
  std::string name;
  Hook hook;
  Segment segment;
  std::vector<ExpectedRecord> records;
  Counters counters;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }  // NOLINT: the name gtest looks for

struct Record {
  apiwarden_payload_event event;
  size_t size;  // as the ring buffer delivered it
  std::string bytes;
};

struct RunResult {
  int error = 0;  // errno of bpf_prog_test_run_opts, 0 on success
  uint32_t retval = 0;
  std::vector<Record> records;
  Counters counters;  // deltas
  uint64_t start_ns = 0, end_ns = 0;
};

uint64_t monotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// The cgroup v2 id of this process: the file handle of its cgroup directory.
std::optional<uint64_t> ownCgroupId() {
  std::string line, relative, mount;
  for (std::ifstream in("/proc/self/cgroup"); std::getline(in, line);) {
    if (line.starts_with("0::")) relative = line.substr(3);
  }
  for (std::ifstream in("/proc/self/mountinfo"); std::getline(in, line);) {
    const size_t sep = line.find(" - ");
    if (sep == std::string::npos || !line.substr(sep + 3).starts_with("cgroup2 ")) continue;
    size_t field = 0, pos = 0;
    for (; field < 4; ++field) pos = line.find(' ', pos) + 1;  // the fifth field is the mount point
    mount = line.substr(pos, line.find(' ', pos) - pos);
  }
  if (relative.empty() || mount.empty()) return std::nullopt;
  alignas(file_handle) std::array<uint8_t, sizeof(file_handle) + sizeof(uint64_t)> buffer{};
  auto* handle = reinterpret_cast<file_handle*>(buffer.data());
  handle->handle_bytes = sizeof(uint64_t);
  int mount_id = 0;
  if (name_to_handle_at(AT_FDCWD, (mount + relative).c_str(), handle, &mount_id, 0) != 0) return std::nullopt;
  uint64_t id = 0;
  std::memcpy(&id, handle->f_handle, sizeof(id));
  return id;
}

class CaptureProgram : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "BPF_PROG_TEST_RUN needs root";
    skel_.reset(apiwarden_bpf__open());
    ASSERT_NE(skel_, nullptr) << "opening the programs failed: " << std::strerror(errno);
    if (ringBytes() != 0) {
      ASSERT_EQ(bpf_map__set_max_entries(skel_->maps.apiwarden_events, ringBytes()), 0);
    }
    ASSERT_EQ(apiwarden_bpf__load(skel_.get()), 0) << "loading the programs failed: " << std::strerror(errno);
    ring_.reset(ring_buffer__new(bpf_map__fd(skel_->maps.apiwarden_events), &CaptureProgram::collect, this, nullptr));
    ASSERT_NE(ring_, nullptr) << std::strerror(errno);
    auto cgroup = ownCgroupId();
    ASSERT_TRUE(cgroup.has_value()) << "cannot resolve this process's cgroup v2 id";
    cgroup_id_ = *cgroup;
  }

  // The ring buffer's size in bytes, 0 for the size the object declares.
  virtual uint32_t ringBytes() const { return 0; }

  static int collect(void* ctx, void* data, size_t size) {
    auto* self = static_cast<CaptureProgram*>(ctx);
    Record record{{}, size, {}};
    if (size >= sizeof(record.event)) {
      std::memcpy(&record.event, data, sizeof(record.event));
      // Records are reserved in size classes: the header's length says where this one ends.
      size_t end = std::min<size_t>(record.event.hdr.length, size);
      if (end > sizeof(record.event)) {
        record.bytes.assign(static_cast<const char*>(data) + sizeof(record.event), end - sizeof(record.event));
      }
    }
    self->collected_.push_back(std::move(record));
    return 0;
  }

  Counters counters() {
    std::array<uint64_t, APIWARDEN_STAT_MAX> totals{};
    std::vector<uint64_t> per_cpu(static_cast<size_t>(libbpf_num_possible_cpus()));
    for (uint32_t key = 0; key < APIWARDEN_STAT_MAX; ++key) {
      EXPECT_EQ(bpf_map_lookup_elem(bpf_map__fd(skel_->maps.apiwarden_stats), &key, per_cpu.data()), 0);
      for (uint64_t v : per_cpu) totals[key] += v;
    }
    return {totals[APIWARDEN_STAT_RECORDS],        totals[APIWARDEN_STAT_LOST_RINGBUF],
            totals[APIWARDEN_STAT_LOST_TRUNCATED], totals[APIWARDEN_STAT_LOST_MAP_FULL],
            totals[APIWARDEN_STAT_SKIPPED_OPAQUE], totals[APIWARDEN_STAT_UNPARSED]};
  }

  // Runs one program once over one frame, then drains the ring buffer unless told not to.
  RunResult run(Hook hook, const Bytes& frame, bool drain = true) {
    RunResult result;
    const Counters before = counters();
    bpf_program* prog =
        hook == Hook::kEgress ? skel_->progs.apiwarden_capture_egress : skel_->progs.apiwarden_capture_ingress;
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(), .data_size_in = static_cast<uint32_t>(frame.size()));
    result.start_ns = monotonicNs();
    if (bpf_prog_test_run_opts(bpf_program__fd(prog), &opts) != 0) result.error = errno;
    result.end_ns = monotonicNs();
    result.retval = opts.retval;
    if (drain) result.records = drainRing();
    result.counters = counters() - before;
    return result;
  }

  std::vector<Record> drainRing() {
    collected_.clear();
    const int consumed = ring_buffer__consume(ring_.get());
    EXPECT_EQ(consumed, static_cast<int>(collected_.size()));
    EXPECT_EQ(ring_buffer__consume(ring_.get()), 0) << "the ring buffer must be empty after a drain";
    return std::move(collected_);
  }

  void expectRecord(const Record& got, const ExpectedRecord& want, const RunResult& run) {
    const apiwarden_payload_event& e = got.event;
    const size_t total = sizeof(apiwarden_payload_event) + want.bytes.size();
    EXPECT_GE(got.size, total) << "the reserved size class holds the whole record";
    EXPECT_EQ(e.hdr.type, APIWARDEN_RECORD_PAYLOAD);
    EXPECT_EQ(e.hdr.version, APIWARDEN_ABI_VERSION);
    EXPECT_EQ(e.hdr.length, total);
    EXPECT_GE(e.hdr.ts_ns, run.start_ns);
    EXPECT_LE(e.hdr.ts_ns, run.end_ns);
    EXPECT_EQ(e.flow.cgroup_id, cgroup_id_) << "the test-run socket lives in the caller's cgroup";
    EXPECT_NE(e.flow.cookie, 0u);
    EXPECT_EQ(addrText(e.flow.local_addr), addrText(recordAddr(want.local.addr).data()));
    EXPECT_EQ(addrText(e.flow.remote_addr), addrText(recordAddr(want.remote.addr).data()));
    EXPECT_EQ(e.flow.local_port, want.local.port);
    EXPECT_EQ(e.flow.remote_port, want.remote.port);
    EXPECT_EQ(e.flow.family, isV6(want.local.addr) ? AF_INET6 : AF_INET);
    EXPECT_EQ(e.flow.role, APIWARDEN_ROLE_UNKNOWN) << "sock_ops never saw the test-run socket";
    EXPECT_EQ(e.flow.pad0, 0);
    EXPECT_EQ(e.seq, want.seq);
    EXPECT_EQ(e.payload_len, want.bytes.size());
    EXPECT_EQ(e.captured_len, want.bytes.size());
    EXPECT_EQ(e.direction, want.direction);
    EXPECT_EQ(e.flags, 0);
    EXPECT_EQ(e.pad0, 0);
    EXPECT_EQ(got.bytes, want.bytes);
  }

  struct SkelDeleter {
    void operator()(apiwarden_bpf* s) const { apiwarden_bpf__destroy(s); }
  };
  struct RingDeleter {
    void operator()(ring_buffer* r) const { ring_buffer__free(r); }
  };
  std::unique_ptr<apiwarden_bpf, SkelDeleter> skel_;
  std::unique_ptr<ring_buffer, RingDeleter> ring_;  // declared after skel_: freed before it
  std::vector<Record> collected_;
  uint64_t cgroup_id_ = 0;
};

// ---- The table --------------------------------------------------------------------------------

Segment tcp(Endpoint from, Endpoint to, std::string payload, uint8_t flags = kPsh | kAck) {
  Segment s;
  s.from = std::move(from);
  s.to = std::move(to);
  s.payload = std::move(payload);
  s.tcp_flags = flags;
  return s;
}

const std::string kGet = "GET /users/1 HTTP/1.1\r\nHost: api.internal\r\nAccept: */*\r\n\r\n";
const std::string kOk = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
// A TLS record header (handshake, 0x0301), then the start of a ClientHello: type, length, version, random.
const std::string kClientHello = raw({0x16, 0x03, 0x01, 0x00, 0xf8, 0x01, 0x00, 0x00, 0xf4, 0x03, 0x03, 0x5e,
                                      0x1a, 0x00, 0x9c, 0x27, 0xd3, 0xff, 0x10, 0x20, 0x00, 0x01, 0x02, 0x03});
const std::string kServerHello = raw({0x16, 0x03, 0x03, 0x00, 0x5a, 0x02, 0x00, 0x00, 0x56, 0x03, 0x03, 0x00, 0xee});
const std::string kAppData = raw({0x17, 0x03, 0x03, 0x00, 0x20, 0x8a, 0x00, 0x41, 0x07});

std::vector<Case> cases() {
  std::vector<Case> t;
  auto copied = [&](std::string name, Hook hook, const Segment& s) {
    t.push_back({std::move(name), hook, s, {hook == Hook::kEgress ? sent(s) : received(s)}, {.records = 1}});
  };
  auto ignored = [&](std::string name, Hook hook, const Segment& s, Counters counters) {
    t.push_back({std::move(name), hook, s, {}, counters});
  };

  // HTTP, both viewpoints of both directions.
  copied("HttpGetIpv4Egress", Hook::kEgress, tcp(kClient4, kServer4, kGet));
  copied("HttpResponseIpv4Ingress", Hook::kIngress, tcp(kServer4, kClient4, kOk));
  copied("HttpRequestIpv4IngressAtServer", Hook::kIngress, tcp(kClient4, kServer4, "POST /v1/orders HTTP/1.1\r\n\r\n"));
  copied("HttpResponseIpv4EgressAtServer", Hook::kEgress, tcp(kServer4, kClient4, "HTTP/1.0 404 Not Found\r\n\r\n"));
  copied("HttpRequestIpv6Egress", Hook::kEgress, tcp(kClient6, kServer6, "PUT /v1/items/9 HTTP/1.1\r\n\r\n"));
  copied("HttpResponseIpv6Ingress", Hook::kIngress, tcp(kServer6, kClient6, kOk));
  for (const char* method : {"GET", "POST", "PUT", "HEAD", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"}) {
    copied(std::string("Method") + method, Hook::kEgress,
           tcp(kClient4, kServer4, std::string(method) + " / HTTP/1.1\r\n\r\n"));
  }
  copied("FourBytesAreEnoughToClassify", Hook::kEgress, tcp(kClient4, kServer4, "PUT "));
  copied("HttpWithFin", Hook::kEgress, tcp(kClient4, kServer4, kGet, kFin | kPsh | kAck));
  Segment big = tcp(kClient4, kServer4, "POST /upload HTTP/1.1\r\nContent-Length: 2953\r\n\r\n");
  for (size_t i = big.payload.size(); i < 3000; ++i) big.payload.push_back(static_cast<char>('a' + i % 26));
  copied("Payload3000BytesWhole", Hook::kEgress, big);
  Segment options = tcp(kClient4, kServer4, kGet);
  // Router alert makes ihl 6; NOP NOP timestamp makes doff 8.
  options.ip_options = raw({0x94, 0x04, 0x00, 0x00});
  options.tcp_options = raw({0x01, 0x01, 0x08, 0x0a, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78});
  copied("IpAndTcpOptionsMoveThePayload", Hook::kEgress, options);

  // TLS: handshake records are copied, anything else is opaque.
  copied("TlsClientHelloEgress", Hook::kEgress, tcp(kClient4, kServer4, kClientHello));
  copied("TlsServerHelloIpv6Ingress", Hook::kIngress, tcp(kServer6, kClient6, kServerHello));
  ignored("TlsApplicationDataIsOpaque", Hook::kEgress, tcp(kClient4, kServer4, kAppData), {.skipped_opaque = 1});

  // Opaque payloads: examined, not copied, counted.
  ignored("SshBannerIsOpaque", Hook::kEgress, tcp(kClient4, kServer4, "SSH-2.0-OpenSSH\r\n"), {.skipped_opaque = 1});
  ignored("LowercaseMethodIsOpaque", Hook::kEgress, tcp(kClient4, kServer4, "get / HTTP/1.1\r\n\r\n"),
          {.skipped_opaque = 1});
  ignored("MethodWithoutSpaceIsOpaque", Hook::kEgress, tcp(kClient4, kServer4, "GETX / HTTP/1.1\r\n"),
          {.skipped_opaque = 1});
  ignored("Http2ResponseIsOpaque", Hook::kIngress, tcp(kServer4, kClient4, "HTTP/2 200\r\n\r\n"),
          {.skipped_opaque = 1});
  ignored("Http2PrefaceIsOpaque", Hook::kEgress, tcp(kClient4, kServer4, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
          {.skipped_opaque = 1});
  ignored("ThreeBytesCannotBeClassified", Hook::kEgress, tcp(kClient4, kServer4, "GET"), {.skipped_opaque = 1});

  // Not ours, or nothing to copy: no record, no counter.
  Segment udp = tcp(kClient4, kServer4, "GET / HTTP/1.1\r\n\r\n");
  udp.l4_protocol = kUdp;
  ignored("UdpIpv4", Hook::kEgress, udp, {});
  Segment udp6 = tcp(kClient6, kServer6, "GET / HTTP/1.1\r\n\r\n");
  udp6.l4_protocol = kUdp;
  ignored("UdpIpv6", Hook::kIngress, udp6, {});
  ignored("PureAck", Hook::kIngress, tcp(kServer4, kClient4, "", kAck), {});
  ignored("Syn", Hook::kEgress, tcp(kClient4, kServer4, "", kSyn), {});
  ignored("FinWithoutPayload", Hook::kEgress, tcp(kClient4, kServer4, "", kFin | kAck), {});

  // Headers that cannot be read: counted as unparsed.
  Segment first_fragment = tcp(kClient4, kServer4, kGet);
  first_fragment.frag_field = kMoreFragments;
  ignored("Ipv4FirstFragment", Hook::kEgress, first_fragment, {.unparsed = 1});
  Segment last_fragment = tcp(kClient4, kServer4, kGet);
  last_fragment.frag_field = 185;  // offset 1480, MF clear
  ignored("Ipv4LastFragment", Hook::kIngress, last_fragment, {.unparsed = 1});
  Segment ip_only = tcp(kClient4, kServer4, "");
  ip_only.l3_bytes = 20;
  ignored("Ipv4HeaderWithoutTcp", Hook::kEgress, ip_only, {.unparsed = 1});
  Segment long_ihl = tcp(kClient4, kServer4, "");
  long_ihl.ihl = 15;  // claims 60 bytes of IP header; the packet holds 40 bytes in all
  ignored("Ipv4HeaderLongerThanPacket", Hook::kEgress, long_ihl, {.unparsed = 1});
  Segment cut_tcp = tcp(kClient4, kServer4, "");
  cut_tcp.l3_bytes = 20 + 8;
  ignored("TcpHeaderCut", Hook::kIngress, cut_tcp, {.unparsed = 1});
  Segment short_ihl = tcp(kClient4, kServer4, kGet);
  short_ihl.ihl = 4;  // under the 20-byte minimum: TCP would be read from inside the IP header
  ignored("Ipv4HeaderLengthBelowMinimum", Hook::kEgress, short_ihl, {.unparsed = 1});
  Segment short_doff = tcp(kClient4, kServer4, kGet);
  short_doff.doff = 3;
  ignored("TcpDataOffsetBelowMinimum", Hook::kEgress, short_doff, {.unparsed = 1});
  Segment hop_by_hop = tcp(kClient6, kServer6, kGet);
  hop_by_hop.l4_protocol = 0;  // an extension header before TCP: not walked, but counted
  ignored("Ipv6ExtensionHeader", Hook::kEgress, hop_by_hop, {.unparsed = 1});
  Segment ip6_only = tcp(kClient6, kServer6, "");
  ip6_only.l3_bytes = 40;
  ignored("Ipv6HeaderWithoutTcp", Hook::kEgress, ip6_only, {.unparsed = 1});
  return t;
}

class CaptureCase : public CaptureProgram, public ::testing::WithParamInterface<Case> {};

TEST_P(CaptureCase, RecordsAndCounters) {
  const Case& c = GetParam();
  const RunResult result = run(c.hook, buildFrame(c.segment));
  ASSERT_EQ(result.error, 0) << std::strerror(result.error);
  EXPECT_EQ(result.retval, 1u) << "capture must always pass the packet";
  EXPECT_EQ(result.counters, c.counters);
  ASSERT_EQ(result.records.size(), c.records.size());
  for (size_t i = 0; i < c.records.size(); ++i) {
    SCOPED_TRACE("record " + std::to_string(i));
    expectRecord(result.records[i], c.records[i], result);
  }
}

INSTANTIATE_TEST_SUITE_P(Table, CaptureCase, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// ---- What the test run itself does ------------------------------------------------------------

// A frame cut inside the IP header never reaches the program: the kernel refuses it.
TEST_F(CaptureProgram, TestRunRefusesFramesWithoutAWholeIpHeader) {
  for (auto [name, segment, l3_bytes] : {std::tuple{"ipv4 none", tcp(kClient4, kServer4, kGet), 0},
                                         std::tuple{"ipv4 19", tcp(kClient4, kServer4, kGet), 19},
                                         std::tuple{"ipv6 39", tcp(kClient6, kServer6, kGet), 39}}) {
    SCOPED_TRACE(name);
    segment.l3_bytes = l3_bytes;
    for (Hook hook : {Hook::kEgress, Hook::kIngress}) {
      const RunResult result = run(hook, buildFrame(segment));
      EXPECT_EQ(result.error, EINVAL);
      EXPECT_TRUE(result.records.empty());
      EXPECT_EQ(result.counters, Counters{});
    }
  }
}

TEST_F(CaptureProgram, NonIpFrameIsNotOurs) {
  Bytes arp = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06};
  arp.resize(kEthernetLen + 28, 0);
  const RunResult result = run(Hook::kIngress, arp);
  ASSERT_EQ(result.error, 0) << std::strerror(result.error);
  EXPECT_EQ(result.retval, 1u);
  EXPECT_TRUE(result.records.empty());
  EXPECT_EQ(result.counters, Counters{});
}

// Every run has its own new socket: a TLS connection would stop being copied after
// APIWARDEN_TLS_SEGMENTS segments and an HTTP one would stay HTTP, but here nothing carries over.
TEST_F(CaptureProgram, EachRunIsANewSocket) {
  std::set<uint64_t> cookies;
  for (int i = 0; i <= APIWARDEN_TLS_SEGMENTS; ++i) {
    Segment hello = tcp(kClient4, kServer4, kClientHello);
    hello.seq = kSeq + static_cast<uint32_t>(i * kClientHello.size());
    const RunResult result = run(Hook::kEgress, buildFrame(hello));
    ASSERT_EQ(result.records.size(), 1u) << "segment " << i;
    expectRecord(result.records[0], sent(hello), result);
    cookies.insert(result.records[0].event.flow.cookie);
  }
  EXPECT_EQ(cookies.size(), APIWARDEN_TLS_SEGMENTS + 1u) << "one cookie per run: one socket per run";

  EXPECT_EQ(run(Hook::kEgress, buildFrame(tcp(kClient4, kServer4, kGet))).counters, Counters{.records = 1});
  Segment follow_up = tcp(kClient4, kServer4, "SSH-2.0-OpenSSH\r\n");
  follow_up.seq = kSeq + static_cast<uint32_t>(kGet.size());
  const RunResult result = run(Hook::kEgress, buildFrame(follow_up));
  EXPECT_TRUE(result.records.empty()) << "the previous run's HTTP class is gone with its socket";
  EXPECT_EQ(result.counters, Counters{.skipped_opaque = 1});
}

// A record that does not fit in the ring buffer is counted as lost, and only that one.
class SmallRing : public CaptureProgram {
 protected:
  uint32_t ringBytes() const override { return 4096; }  // the smallest ring: one page
};

TEST_F(SmallRing, RecordThatDoesNotFitIsCountedLost) {
  // Records are reserved in size classes: the first takes a 1024-byte slot, the second needs the
  // 4096-byte class, more than the page has left.
  Segment first = tcp(kClient4, kServer4, "POST /a HTTP/1.1\r\n\r\n" + std::string(400, 'x'));
  Segment second = tcp(kClient4, kServer4, "POST /b HTTP/1.1\r\n\r\n" + std::string(2500, 'x'));
  second.seq += static_cast<uint32_t>(first.payload.size());

  const RunResult kept = run(Hook::kEgress, buildFrame(first), /*drain=*/false);
  EXPECT_EQ(kept.counters, Counters{.records = 1});
  const RunResult lost = run(Hook::kEgress, buildFrame(second), /*drain=*/false);
  EXPECT_EQ(lost.retval, 1u);
  EXPECT_EQ(lost.counters, Counters{.lost_ringbuf = 1});

  const std::vector<Record> records = drainRing();
  ASSERT_EQ(records.size(), 1u);
  expectRecord(records[0], sent(first), kept);
}

// The frame builder itself: lengths and checksums a real stack would accept.
TEST(FrameBuilder, LengthsAndChecksumsAreValid) {
  Segment s = tcp(kClient4, kServer4, kGet);
  s.ip_options = raw({0x94, 0x04, 0x00, 0x00});
  const Bytes v4 = buildFrame(s);
  const Bytes ip(v4.begin() + kEthernetLen, v4.begin() + kEthernetLen + 24);
  EXPECT_EQ(v4[kEthernetLen], 0x46);
  EXPECT_EQ(checksum(ip), 0);
  EXPECT_EQ(size_t{v4[kEthernetLen + 2]} << 8 | v4[kEthernetLen + 3], v4.size() - kEthernetLen);

  const Bytes v6 = buildFrame(tcp(kClient6, kServer6, kGet));
  EXPECT_EQ(size_t{v6[kEthernetLen + 4]} << 8 | v6[kEthernetLen + 5], v6.size() - kEthernetLen - 40);
  Bytes pseudo(v6.begin() + kEthernetLen + 8, v6.begin() + kEthernetLen + 40);  // source, destination
  append32(pseudo, static_cast<uint32_t>(v6.size() - kEthernetLen - 40));
  append32(pseudo, kTcp);
  pseudo.insert(pseudo.end(), v6.begin() + kEthernetLen + 40, v6.end());
  EXPECT_EQ(checksum(pseudo), 0);
}

}  // namespace
