#include "agent/export/json_lines.h"

#include "apiwarden/common/log.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <utility>

namespace apiwarden::records {
namespace {

using Out = JsonBuffer;

// One-off text (not a record line): what `fill` appends.
template <typename Fill>
std::string render(Fill fill) {
  Out out;
  fill(out);
  return std::string(out.view());
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not one.
size_t utf8Length(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  size_t n = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  }
  if (n == 3 && ((c == 0xE0 && byte(i + 1) < 0xA0) || (c == 0xED && byte(i + 1) >= 0xA0))) return 0;
  if (n == 4 && ((c == 0xF0 && byte(i + 1) < 0x90) || (c == 0xF4 && byte(i + 1) >= 0x90))) return 0;
  return n;
}

void appendUint(Out& out, uint64_t value) {
  fmt::format_int text(value);
  out.append({text.data(), text.size()});
}

bool plain(unsigned char c) { return c >= 0x20 && c < 0x80 && c != '"' && c != '\\'; }

// End of the run of plain characters from i: eight at a time while a word holds none that needs
// escaping (a control, a quote, a backslash, a non-ASCII byte), then one at a time.
size_t plainRun(std::string_view s, size_t i) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL, kHigh = 0x8080808080808080ULL;
  auto has_zero = [](uint64_t v) { return (v - kOnes) & ~v & kHigh; };
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    if ((w & kHigh) || ((w - 0x20 * kOnes) & kHigh) || has_zero(w ^ ('"' * kOnes)) || has_zero(w ^ ('\\' * kOnes))) {
      break;
    }
  }
  while (i < s.size() && plain(static_cast<unsigned char>(s[i]))) ++i;
  return i;
}

// Appends s as a JSON string: escapes quotes, backslashes and controls; invalid UTF-8 -> U+FFFD.
void appendString(Out& out, std::string_view s) {
  out.push_back('"');
  for (size_t i = 0; i < s.size();) {
    size_t run = plainRun(s, i);
    out.append(s.substr(i, run - i));  // the common case: one bulk append
    if (run == s.size()) break;
    i = run;
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20) {
      static constexpr char kHex[] = "0123456789abcdef";
      out.append("\\u00");
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    } else if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if (size_t n = utf8Length(s, i); n > 0) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    } else {
      out.append("\\ufffd");
    }
    ++i;
  }
  out.push_back('"');
}

void appendKey(Out& out, std::string_view key) {
  out.push_back('"');
  out.append(key);
  out.append("\":");
}

// ,"key":value -- for every field but the first of an object.
void appendField(Out& out, std::string_view key, std::string_view value) {
  out.push_back(',');
  appendKey(out, key);
  appendString(out, value);
}

void appendField(Out& out, std::string_view key, uint64_t value) {
  out.push_back(',');
  appendKey(out, key);
  appendUint(out, value);
}

// Members written from `mark` on each start with a comma: the first becomes the object's brace.
void closeObject(Out& out, size_t mark) {
  if (out.size() > mark) {
    out[mark] = '{';
  } else {
    out.push_back('{');
  }
  out.push_back('}');
}

void appendEndpoint(Out& out, std::string_view key, const Endpoint& e) {
  appendKey(out, key);
  out.append("{\"ip\":");
  appendString(out, e.ip);
  appendField(out, "port", e.port);
  out.push_back('}');
}

// Everything known about who the workload is; unknown fields are left out.
void appendIdentity(Out& out, const Workload& w) {
  for (auto [key, value] : {std::pair<std::string_view, const std::string*>{"container_id", &w.container_id},
                            {"pod_uid", &w.pod_uid},
                            {"pod", &w.pod},
                            {"namespace", &w.ns},
                            {"service_account", &w.service_account},
                            {"owner", &w.owner},
                            {"node", &w.node},
                            {"spiffe_id", &w.spiffe_id},
                            {"systemd_unit", &w.systemd_unit}}) {
    if (!value->empty()) appendField(out, key, *value);
  }
  if (!w.labels.empty()) {
    out.append(",\"labels\":{");
    for (size_t i = 0; i < w.labels.size(); ++i) {
      if (i > 0) out.push_back(',');
      appendString(out, w.labels[i].first);
      out.push_back(':');
      appendString(out, w.labels[i].second);
    }
    out.push_back('}');
  }
  if (w.process) {
    out.append(",\"process\":{\"exe\":");
    appendString(out, w.process->exe);
    appendField(out, "pid", static_cast<uint64_t>(w.process->pid));
    if (!w.process->user.empty()) appendField(out, "user", w.process->user);
    out.push_back('}');
  }
}

// {"cgroup_id":..,...}
void appendWorkloadObject(Out& out, const Workload& workload) {
  out.append("{\"cgroup_id\":");
  appendUint(out, workload.cgroup_id);
  if (workload.cgroup_path) appendField(out, "cgroup_path", *workload.cgroup_path);
  appendIdentity(out, workload);
  out.push_back('}');
}

// "key":{"cgroup_id":..,...}
void appendWorkload(Out& out, std::string_view key, const Workload& workload) {
  appendKey(out, key);
  appendWorkloadObject(out, workload);
}

// ts, type, direction, workload, local, remote: what every record starts with.
void appendCommon(Out& out, uint64_t ts_ns, std::string_view type, const FlowInfo& flow) {
  out.append("{\"ts\":\"");
  appendTimestamp(out, ts_ns);
  out.append("\",\"type\":\"");
  out.append(type);
  out.append("\",\"direction\":\"");
  out.append(flow.direction == Direction::kServer ? "server" : "client");
  out.append("\",");
  appendWorkload(out, "workload", flow.workload);
  out.push_back(',');
  appendEndpoint(out, "local", flow.local);
  out.push_back(',');
  appendEndpoint(out, "remote", flow.remote);
  if (!flow.peer.scope.empty()) {
    out.append(",\"peer\":{\"scope\":");
    appendString(out, flow.peer.scope);
    if (flow.peer.workload) {
      out.push_back(',');
      appendWorkload(out, "workload", *flow.peer.workload);
    }
    out.push_back('}');
  }
}

void appendCertificate(Out& out, std::string_view key, const tls::CertificateInfo& cert) {
  out.push_back(',');
  appendKey(out, key);
  out.append("{\"subject\":");
  appendString(out, cert.subject);
  appendField(out, "issuer", cert.issuer);
  out.append(",\"sans\":[");
  for (size_t i = 0; i < cert.sans.size(); ++i) {
    if (i > 0) out.push_back(',');
    appendString(out, cert.sans[i]);
  }
  out.push_back(']');
  appendField(out, "not_after", cert.not_after);
  appendField(out, "sha256", cert.sha256);
  out.push_back('}');
}

void appendTls(Out& out, const std::optional<TlsInfo>& tls) {
  if (!tls) return;
  out.append(",\"tls\":");
  size_t mark = out.size();
  for (auto [key, value] : {std::pair<std::string_view, const std::string*>{"sni", &tls->sni},
                            {"version", &tls->version},
                            {"alpn", &tls->alpn}}) {
    if (!value->empty()) appendField(out, key, *value);
  }
  if (tls->server_cert) appendCertificate(out, "server_cert", *tls->server_cert);
  if (tls->client_cert) appendCertificate(out, "client_cert", *tls->client_cert);
  if (tls->intercepted) out.append(",\"intercepted\":true");
  closeObject(out, mark);
}

void appendJwt(Out& out, const credentials::JwtClaims& jwt) {
  out.append(",\"jwt\":");
  size_t mark = out.size();
  for (auto [key, value] : {std::pair<std::string_view, const std::string*>{"alg", &jwt.alg},
                            {"kid", &jwt.kid},
                            {"iss", &jwt.iss},
                            {"sub", &jwt.sub},
                            {"aud", &jwt.aud},
                            {"azp", &jwt.azp},
                            {"client_id", &jwt.client_id},
                            {"jti", &jwt.jti}}) {
    if (!value->empty()) appendField(out, key, *value);
  }
  for (auto [key, value] : {std::pair<std::string_view, const std::optional<int64_t>*>{"iat", &jwt.iat},
                            {"nbf", &jwt.nbf},
                            {"exp", &jwt.exp}}) {
    if (*value) {
      out.push_back(',');
      appendKey(out, key);
      fmt::format_int text(**value);
      out.append({text.data(), text.size()});
    }
  }
  closeObject(out, mark);
}

void appendCredential(Out& out, const credentials::Credential& c) {
  out.append(",\"credential\":{\"scheme\":\"");
  out.append(credentials::toString(c.scheme));
  out.push_back('"');
  if (!c.fingerprint.empty()) appendField(out, "fingerprint", c.fingerprint);
  if (!c.source.empty()) appendField(out, "source", c.source);
  if (!c.basic_user.empty()) appendField(out, "basic_user", c.basic_user);
  if (c.jwt) appendJwt(out, *c.jwt);
  out.push_back('}');
}

}  // namespace

void JsonBuffer::grow(size_t more) { data_.resize(std::max(data_.size() * 2, size_ + more + 256)); }

void appendTimestamp(JsonBuffer& out, uint64_t realtime_ns) {
  // Records arrive in bursts within one second: format the date and time once per second.
  thread_local time_t cached_second = -1;
  thread_local char prefix[32];
  thread_local size_t prefix_size = 0;
  time_t seconds = static_cast<time_t>(realtime_ns / 1'000'000'000ULL);
  if (seconds != cached_second) {
    tm utc{};
    gmtime_r(&seconds, &utc);
    int n = std::snprintf(prefix, sizeof(prefix), "%04d-%02d-%02dT%02d:%02d:%02d.", utc.tm_year + 1900,
                          utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec);
    prefix_size = n > 0 ? std::min(static_cast<size_t>(n), sizeof(prefix) - 1) : 0;
    cached_second = seconds;
  }
  char micros[7];
  uint32_t us = static_cast<uint32_t>((realtime_ns % 1'000'000'000ULL) / 1000);
  for (int i = 5; i >= 0; --i, us /= 10) micros[i] = static_cast<char>('0' + us % 10);
  micros[6] = 'Z';
  out.append({prefix, prefix_size});
  out.append({micros, sizeof(micros)});
}

std::string formatTimestamp(uint64_t realtime_ns) {
  return render([&](Out& out) { appendTimestamp(out, realtime_ns); });
}

std::string workloadToJson(const Workload& workload) {
  return render([&](Out& out) { appendWorkloadObject(out, workload); });
}

void appendJson(JsonBuffer& out, const HttpRecord& r) {
  appendCommon(out, r.ts_ns, "http", *r.flow);
  out.append(",\"http\":{\"method\":");
  appendString(out, r.method);
  appendField(out, "path", r.path);
  if (!r.host.empty()) appendField(out, "host", r.host);
  if (r.status) appendField(out, "status", *r.status);
  appendField(out, "version", r.version);
  appendField(out, "latency_us", r.latency_us);
  appendField(out, "request_bytes", r.request_bytes);
  appendField(out, "response_bytes", r.response_bytes);
  out.push_back('}');
  appendCredential(out, r.credential);
  appendTls(out, r.flow->tls);
  out.push_back('}');
}

void appendJson(JsonBuffer& out, const ConnectionRecord& r) {
  appendCommon(out, r.ts_ns, "connection", *r.flow);
  for (auto [key, value] : {std::pair<std::string_view, uint64_t>{"bytes_sent", r.bytes_sent},
                            {"bytes_received", r.bytes_received},
                            {"duration_us", r.duration_us},
                            {"srtt_us", r.srtt_us},
                            {"retransmits", r.retransmits},
                            {"http_requests", r.http_requests}}) {
    appendField(out, key, value);
  }
  appendTls(out, r.flow->tls);
  out.push_back('}');
}

std::string toJson(const HttpRecord& record) {
  return render([&](Out& out) { appendJson(out, record); });
}

std::string toJson(const ConnectionRecord& record) {
  return render([&](Out& out) { appendJson(out, record); });
}

Result<std::unique_ptr<JsonLinesWriter>> JsonLinesWriter::open(const std::string& path) {
  if (path == "-") return std::unique_ptr<JsonLinesWriter>(new JsonLinesWriter(stdout, false));
  FILE* file = std::fopen(path.c_str(), "ae");
  if (!file) return fail(errno, "opening " + path);
  return std::unique_ptr<JsonLinesWriter>(new JsonLinesWriter(file, true));
}

JsonLinesWriter::JsonLinesWriter(FILE* file, bool owned) : file_(file), owned_(owned) {
  thread_ = std::thread([this] { run(); });
}

JsonLinesWriter::~JsonLinesWriter() {
  flush();
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  work_.notify_one();
  thread_.join();
  if (owned_) std::fclose(file_);
}

template <typename Record>
void JsonLinesWriter::writeLine(const Record& record) {
  appendJson(chunk_.text, record);
  chunk_.text.push_back('\n');
  ++chunk_.lines;
  if (chunk_.text.size() >= kChunkBytes) flush();
}

void JsonLinesWriter::write(const HttpRecord& record) { writeLine(record); }
void JsonLinesWriter::write(const ConnectionRecord& record) { writeLine(record); }

void JsonLinesWriter::flush() {
  if (chunk_.lines == 0) return;
  Chunk chunk = std::exchange(chunk_, Chunk{});
  {
    std::lock_guard lock(mutex_);
    if (queued_bytes_ + chunk.text.size() > kMaxBacklogBytes) {
      write_errors_ += chunk.lines;
      if (!std::exchange(dropping_, true)) {
        logger("records")->warn("the records output is over {} MiB behind: dropping records (counted in "
                                "apiwarden_records_write_errors_total) until it catches up", kMaxBacklogBytes >> 20);
      }
      return;
    }
    dropping_ = false;
    queued_bytes_ += chunk.text.size();
    queue_.push_back(std::move(chunk));
  }
  work_.notify_one();
}

void JsonLinesWriter::sync() {
  flush();
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [this] { return queue_.empty() && !busy_; });
}

void JsonLinesWriter::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    work_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything is written
    Chunk chunk = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    std::string_view text = chunk.text.view();
    bool ok = std::fwrite(text.data(), 1, text.size(), file_) == text.size() && std::fflush(file_) == 0;
    if (!ok) std::clearerr(file_);
    (ok ? written_ : write_errors_) += chunk.lines;
    lock.lock();
    queued_bytes_ -= text.size();
    busy_ = false;
    if (queue_.empty()) idle_.notify_all();
  }
}

}  // namespace apiwarden::records
