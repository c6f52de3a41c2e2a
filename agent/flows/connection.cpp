#include "agent/flows/connection.h"

#include "agent/protocols/tls/certificate.h"
#include "agent/protocols/tls/client_hello.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace apiwarden::flows {
namespace {

bool startsWith(std::span<const uint8_t> data, std::string_view prefix) {
  return data.size() >= prefix.size() && std::memcmp(data.data(), prefix.data(), prefix.size()) == 0;
}

bool isTlsHandshake(std::span<const uint8_t> data) {
  return data.size() >= 2 && data[0] == 0x16 && data[1] == 0x03;
}

uint64_t toMicros(uint64_t ns) { return ns / 1000; }

}  // namespace

std::string formatAddress(const uint8_t addr[16]) {
  static constexpr uint8_t kV4Mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(addr, kV4Mapped, sizeof(kV4Mapped)) == 0) {
    // By hand: glibc's inet_ntop formats IPv4 with sprintf, and every connection needs two.
    char text[16];
    char* end = text;
    for (int i = 12; i < 16; ++i) {
      if (i > 12) *end++ = '.';
      uint8_t octet = addr[i];
      if (octet >= 100) *end++ = static_cast<char>('0' + octet / 100);
      if (octet >= 10) *end++ = static_cast<char>('0' + octet / 10 % 10);
      *end++ = static_cast<char>('0' + octet % 10);
    }
    return std::string(text, end);
  }
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(AF_INET6, addr, text, sizeof(text));
  return text;
}

Connection::Stream::Stream(Connection& owner, http::Parser::Kind kind)
    : reassembler(owner.ctx_.options.reassembly),
      owner_(owner),
      kind_(kind),
      parser_(kind, *this, owner.ctx_.options.http) {}

void Connection::Stream::onMessageComplete(uint64_t bytes) {
  if (kind_ == http::Parser::Kind::kRequest) {
    owner_.requestComplete(bytes);
  } else {
    owner_.responseComplete(bytes);
  }
}

void Connection::Stream::onParseError(http::ParseError error) {
  ++owner_.ctx_.stats.parse_errors[static_cast<size_t>(error)];
}

Connection::Connection(const apiwarden_flow& flow, records::Workload workload, uint64_t now_ns,
                       ConnectionContext& ctx)
    : ctx_(ctx),
      last_seen_ns_(now_ns),
      requests_(*this, http::Parser::Kind::kRequest),
      responses_(*this, http::Parser::Kind::kResponse) {
  info_.workload = std::move(workload);
  info_.local = {formatAddress(flow.local_addr), flow.local_port};
  info_.remote = {formatAddress(flow.remote_addr), flow.remote_port};
  std::memcpy(remote_addr_.data(), flow.remote_addr, remote_addr_.size());
  info_.peer.scope = ctx_.scope.classify(flow.remote_addr);
  if (flow.role != APIWARDEN_ROLE_UNKNOWN) {
    info_.direction = flow.role == APIWARDEN_ROLE_SERVER ? records::Direction::kServer : records::Direction::kClient;
    role_known_ = true;
  }
}

Connection::~Connection() = default;

// A connection that predates the agent has no role from the kernel: the first payload tells.
void Connection::decideRole(uint8_t direction, std::span<const uint8_t> data) {
  bool egress = direction == APIWARDEN_DIR_EGRESS;
  bool carries_responses = startsWith(data, "HTTP/");
  bool sender_is_client = carries_responses ? !egress : egress;
  info_.direction = sender_is_client ? records::Direction::kClient : records::Direction::kServer;
  role_known_ = true;
}

void Connection::onPayload(const apiwarden_payload_event& event, std::span<const uint8_t> data) {
  last_seen_ns_ = event.hdr.ts_ns;
  if (!role_known_) decideRole(event.direction, data);
  bool egress = event.direction == APIWARDEN_DIR_EGRESS;
  bool request_stream = egress == isClient();

  if (event.flags & APIWARDEN_PAYLOAD_TLS_PLAINTEXT) {
    feedPlaintext(event, request_stream, data);
    return;
  }
  if (mode_ == Mode::kUndecided) {
    if (!request_stream) return;  // wait for the client's first bytes to decide
    mode_ = isTlsHandshake(data) ? Mode::kTls : Mode::kHttp;
  }
  if (mode_ == Mode::kTls) {
    feedTls(request_stream, data);
    return;
  }
  segment_ns_ = event.hdr.ts_ns;
  Stream& stream = request_stream ? requests_ : responses_;
  stream.reassembler.push(event.seq, event.payload_len, data, stream);
}

// Decrypted bytes: the wire carries TLS, the HTTP parsers get the plaintext (its own seq space).
void Connection::feedPlaintext(const apiwarden_payload_event& event, bool request_stream,
                               std::span<const uint8_t> data) {
  if (mode_ == Mode::kUndecided) mode_ = Mode::kTls;  // a connection that predates the agent
  if (!info_.tls) info_.tls.emplace();
  info_.tls->intercepted = true;
  segment_ns_ = event.hdr.ts_ns;
  Stream& stream = request_stream ? requests_ : responses_;
  stream.reassembler.push(event.seq, event.payload_len, data, stream);
}

// The handshake flights in the clear: the ClientHello, and on TLS 1.2 the certificates.
void Connection::feedTls(bool request_stream, std::span<const uint8_t> data) {
  std::vector<uint8_t>& flight = request_stream ? hello_ : server_flight_;
  bool done = request_stream ? hello_done_ && client_cert_done_ : server_cert_done_;
  if (done) return;
  size_t room = ctx_.options.max_tls_hello_bytes - flight.size();
  flight.insert(flight.end(), data.begin(), data.begin() + static_cast<ptrdiff_t>(std::min(room, data.size())));
  if (request_stream && !hello_done_) readClientHello();
  if (!info_.tls) return;  // certificates are attached once the ClientHello is known
  if (!client_cert_done_) {
    if (auto cert = readCertificate(hello_, client_cert_done_)) info_.tls->client_cert = std::move(cert);
  }
  if (!server_cert_done_) {
    if (auto cert = readCertificate(server_flight_, server_cert_done_)) info_.tls->server_cert = std::move(cert);
  }
}

void Connection::readClientHello() {
  auto hello = tls::parseClientHello(hello_);
  if (!hello && hello.error() == tls::HelloError::kNeedMore && hello_.size() < ctx_.options.max_tls_hello_bytes) {
    return;
  }
  hello_done_ = true;
  if (!hello) {
    ++ctx_.stats.tls_hello_errors;
    client_cert_done_ = server_cert_done_ = true;
    return;
  }
  ++ctx_.stats.tls_hellos;
  if (!info_.tls) info_.tls.emplace();
  info_.tls->sni = hello->sni;
  info_.tls->version = tls::versionName(hello->max_version);
  info_.tls->alpn = hello->alpn.empty() ? std::string() : hello->alpn.front();
}

// The leaf certificate of one direction's flight, once it is there (or known not to be).
std::optional<tls::CertificateInfo> Connection::readCertificate(std::vector<uint8_t>& flight, bool& done) {
  auto der = tls::findLeafCertificate(flight);
  if (!der && der.error() == tls::HelloError::kNeedMore && flight.size() < ctx_.options.max_tls_hello_bytes) {
    return std::nullopt;
  }
  done = true;
  flight.clear();
  flight.shrink_to_fit();
  if (!der) return std::nullopt;
  auto info = tls::describeCertificate(*der);
  return info ? std::optional(*info) : std::nullopt;
}

void Connection::requestHead(const http::RequestHead& head) {
  if (pending_.size() >= ctx_.options.max_pending_requests) {
    ++ctx_.stats.pending_overflow;
    writeHttp(pending_.front());
    pending_.pop_front();
  }
  PendingRequest& request = pending_.emplace_back();
  request.method = head.method;
  request.target = credentials::redactTarget(head.target);
  request.host = head.host;
  request.version = head.version_minor == 0 ? "1.0" : "1.1";
  request.credential = ctx_.credentials.extract(head);
  if (request.credential.scheme == credentials::Scheme::kNone && info_.tls && info_.tls->client_cert) {
    request.credential = ctx_.credentials.fromClientCertificate(info_.tls->client_cert->sha256);
  }
  request.request_ns = segment_ns_;
}

void Connection::requestComplete(uint64_t bytes) {
  for (PendingRequest& request : pending_) {
    if (!request.request_complete) {
      request.request_complete = true;
      request.request_bytes = bytes;
      return;
    }
  }
}

http::ResponseBody Connection::responseHead(const http::ResponseHead& head) {
  interim_response_ = head.status >= 100 && head.status < 200 && head.status != 101;
  orphan_response_ = pending_.empty();
  if (orphan_response_) {
    ++ctx_.stats.orphan_responses;
    return http::ResponseBody::kFromHeaders;
  }
  if (interim_response_) return http::ResponseBody::kFromHeaders;
  PendingRequest& request = pending_.front();
  request.status = head.status;
  request.response_ns = segment_ns_;
  if (request.method == "HEAD") return http::ResponseBody::kNone;
  if (request.method == "CONNECT" && head.status >= 200 && head.status < 300) return http::ResponseBody::kTunnel;
  return http::ResponseBody::kFromHeaders;
}

void Connection::responseComplete(uint64_t bytes) {
  if (interim_response_ || orphan_response_) {
    interim_response_ = orphan_response_ = false;
    return;
  }
  if (pending_.empty()) return;
  pending_.front().response_bytes = bytes;
  writeHttp(pending_.front());
  pending_.pop_front();
}

// Fills in what was unknown when the connection was first seen: the cgroup, the pod, the peer.
void Connection::refreshIdentities() {
  const records::Workload& w = info_.workload;
  if (!w.cgroup_path || (!w.pod_uid.empty() && w.pod.empty())) ctx_.workloads.refresh(info_.workload);
  if (!info_.peer.workload) {
    info_.peer.workload = ctx_.peers.workloadAt(remote_addr_.data(), info_.remote.port);
    if (info_.peer.workload) info_.peer.scope = "node";
  }
}

// The request is consumed: its strings move into the record.
void Connection::writeHttp(PendingRequest& request) {
  refreshIdentities();
  records::HttpRecord record;
  record.flow = &info_;
  record.ts_ns = ctx_.wall.toRealtimeNs(request.request_ns);
  record.method = std::move(request.method);
  record.path = std::move(request.target);
  record.host = std::move(request.host);
  record.version = request.version;
  record.status = request.status;
  if (request.status && request.response_ns >= request.request_ns) {
    record.latency_us = toMicros(request.response_ns - request.request_ns);
  }
  record.request_bytes = request.request_bytes;
  record.response_bytes = request.response_bytes;
  record.credential = std::move(request.credential);
  if (!request.status) ++ctx_.stats.unanswered_requests;
  ++ctx_.stats.http_records;
  ++http_requests_;
  ctx_.sink.write(record);
}

void Connection::onClose(const apiwarden_conn_event& event) {
  last_seen_ns_ = event.hdr.ts_ns;
  if (mode_ == Mode::kHttp || (info_.tls && info_.tls->intercepted)) {
    requests_.reassembler.flush(requests_);
    responses_.reassembler.flush(responses_);
    responses_.parser_.finish();
    requests_.parser_.finish();
    for (PendingRequest& request : pending_) writeHttp(request);
    pending_.clear();
  }
  for (const Stream* stream : {&requests_, &responses_}) {
    ctx_.stats.gap_bytes += stream->reassembler.stats().gap_bytes;
    ctx_.stats.duplicate_bytes += stream->reassembler.stats().duplicate_bytes;
  }

  if (!role_known_ && event.flow.role != APIWARDEN_ROLE_UNKNOWN) {
    info_.direction = event.flow.role == APIWARDEN_ROLE_SERVER ? records::Direction::kServer
                                                                : records::Direction::kClient;
  }
  refreshIdentities();
  records::ConnectionRecord record;
  record.flow = &info_;
  record.ts_ns = ctx_.wall.toRealtimeNs(event.hdr.ts_ns);
  record.bytes_sent = event.bytes_sent;
  record.bytes_received = event.bytes_received;
  record.duration_us = toMicros(event.duration_ns);
  record.srtt_us = event.srtt_us;
  record.retransmits = event.total_retrans;
  record.http_requests = http_requests_;
  ++ctx_.stats.connection_records;
  ctx_.sink.write(record);
}

}  // namespace apiwarden::flows
