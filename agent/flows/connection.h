// One observed TCP socket: its two byte streams, the HTTP exchanges on them, and its records.
//
// The stream carrying requests is the socket's egress for a client and its ingress for a server.
// Each stream goes through a StreamReassembler into an http::Parser; request heads queue up
// (pipelining) and each final response completes the oldest one, which becomes an HttpRecord.
#pragma once

#include "agent/credentials/credential.h"
#include "agent/export/record.h"
#include "agent/flows/network_scope.h"
#include "agent/flows/reassembler.h"
#include "agent/protocols/http/parser.h"
#include "apiwarden/abi.h"
#include "apiwarden/common/clock.h"

#include <array>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace apiwarden::flows {

struct TrackerOptions {
  size_t max_connections = 65536;
  size_t max_pending_requests = 64;              // per connection; older ones are written unanswered
  uint64_t idle_timeout_ns = 600'000'000'000ULL;  // forget connections silent this long
  size_t max_tls_hello_bytes = 16384;
  ReassemblerLimits reassembly;
  http::Limits http;
};

struct TrackerStats {
  uint64_t connections_opened = 0;
  uint64_t connections_closed = 0;
  uint64_t table_full = 0;      // events dropped: the table was at max_connections
  uint64_t idle_evicted = 0;
  uint64_t http_records = 0;
  uint64_t connection_records = 0;
  uint64_t unanswered_requests = 0;  // written without a status (connection ended first)
  uint64_t pending_overflow = 0;     // written early: too many requests awaiting responses
  uint64_t orphan_responses = 0;     // responses with no request to pair with
  uint64_t tls_hellos = 0;
  uint64_t tls_hello_errors = 0;
  uint64_t gap_bytes = 0;
  uint64_t duplicate_bytes = 0;
  std::array<uint64_t, http::kParseErrorCount> parse_errors{};
};

// Names workloads by cgroup id. describe() runs when a connection is first seen; refresh() fills
// in what was unknown then (pod metadata that arrived later) before a record is written.
class WorkloadDirectory {
 public:
  virtual ~WorkloadDirectory() = default;
  virtual records::Workload describe(uint64_t cgroup_id) = 0;
  virtual void refresh(records::Workload& workload) = 0;
};

// The workload on this node whose socket has a given local endpoint, if any.
class PeerDirectory {
 public:
  virtual ~PeerDirectory() = default;
  virtual std::optional<records::Workload> workloadAt(const uint8_t addr[16], uint16_t port) = 0;
};

// What every connection shares: where records go and how time and workloads are named.
struct ConnectionContext {
  records::RecordSink& sink;
  const credentials::CredentialExtractor& credentials;
  WorkloadDirectory& workloads;
  PeerDirectory& peers;
  const NetworkScope& scope;
  const WallClockMapper& wall;
  const TrackerOptions& options;
  TrackerStats& stats;
};

class Connection {
 public:
  Connection(const apiwarden_flow& flow, records::Workload workload, uint64_t now_ns, ConnectionContext& ctx);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // A TCP segment's payload, or (APIWARDEN_PAYLOAD_TLS_PLAINTEXT) plaintext read at the TLS library.
  void onPayload(const apiwarden_payload_event& event, std::span<const uint8_t> data);
  // The socket closed: finishes both streams, writes what is pending and the connection record.
  void onClose(const apiwarden_conn_event& event);
  uint64_t lastSeenNs() const { return last_seen_ns_; }

 private:
  enum class Mode : uint8_t { kUndecided, kHttp, kTls };

  struct PendingRequest {
    std::string method, target, host;
    std::string_view version;
    credentials::Credential credential;
    uint64_t request_ns = 0, response_ns = 0;
    uint64_t request_bytes = 0, response_bytes = 0;
    bool request_complete = false;
    std::optional<uint16_t> status;
  };

  // Requests awaiting their responses, oldest first. A vector with a moving front that is emptied
  // whenever it drains (on a keep-alive connection, after every response): no allocation per
  // request, as a deque's node blocks would cost.
  class PendingQueue {
   public:
    bool empty() const { return front_ == items_.size(); }
    size_t size() const { return items_.size() - front_; }
    PendingRequest& front() { return items_[front_]; }
    PendingRequest& emplace_back() { return items_.emplace_back(); }
    void pop_front() {
      if (++front_ == items_.size()) {
        clear();
      } else if (front_ >= 32) {  // pipelined without pause: drop the consumed front now and then
        items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(front_));
        front_ = 0;
      }
    }
    void clear() {
      items_.clear();
      if (items_.capacity() > 8) items_.shrink_to_fit();  // a pipelined burst's room is not kept
      front_ = 0;
    }
    auto begin() { return items_.begin() + static_cast<std::ptrdiff_t>(front_); }
    auto end() { return items_.end(); }

   private:
    std::vector<PendingRequest> items_;
    size_t front_ = 0;
  };

  // One direction: reassembly feeding a parser; also the parser's listener.
  class Stream final : public StreamSink, public http::ParserListener {
   public:
    Stream(Connection& owner, http::Parser::Kind kind);
    void onData(std::span<const uint8_t> data) override { parser_.feed(data); }
    void onGap(uint64_t bytes) override { parser_.skip(bytes); }
    void onRequestHead(const http::RequestHead& head) override { owner_.requestHead(head); }
    http::ResponseBody onResponseHead(const http::ResponseHead& head) override { return owner_.responseHead(head); }
    void onMessageComplete(uint64_t bytes) override;
    void onParseError(http::ParseError error) override;

    StreamReassembler reassembler;

   private:
    Connection& owner_;
    http::Parser::Kind kind_;
    http::Parser parser_;
    friend class Connection;
  };

  void decideRole(uint8_t direction, std::span<const uint8_t> data);
  void requestHead(const http::RequestHead& head);
  http::ResponseBody responseHead(const http::ResponseHead& head);
  void requestComplete(uint64_t bytes);
  void responseComplete(uint64_t bytes);
  void feedTls(bool request_stream, std::span<const uint8_t> data);
  void feedPlaintext(const apiwarden_payload_event& event, bool request_stream, std::span<const uint8_t> data);
  void readClientHello();
  std::optional<tls::CertificateInfo> readCertificate(std::vector<uint8_t>& flight, bool& done);
  void writeHttp(PendingRequest& request);
  void refreshIdentities();
  bool isClient() const { return info_.direction == records::Direction::kClient; }

  ConnectionContext& ctx_;
  records::FlowInfo info_;
  std::array<uint8_t, 16> remote_addr_;
  bool role_known_ = false;
  Mode mode_ = Mode::kUndecided;
  uint64_t last_seen_ns_;
  uint64_t segment_ns_ = 0;  // timestamp of the segment being parsed
  Stream requests_;
  Stream responses_;
  PendingQueue pending_;
  bool interim_response_ = false;  // a 1xx is being parsed
  bool orphan_response_ = false;   // a response with no request is being parsed
  std::vector<uint8_t> hello_;          // the client's handshake flights (bounded)
  std::vector<uint8_t> server_flight_;  // the server's
  bool hello_done_ = false, client_cert_done_ = false, server_cert_done_ = false;
  uint64_t http_requests_ = 0;
};

// Textual address of a 16-byte ABI address (v4-mapped shown as IPv4).
std::string formatAddress(const uint8_t addr[16]);

}  // namespace apiwarden::flows
