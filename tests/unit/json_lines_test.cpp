// JSON Lines records: exact layout, hostile strings, timestamps, files.
#include "agent/export/json_lines.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <thread>

namespace apiwarden::records {
namespace {

constexpr uint64_t kTs = 1'795'363'200'123'456'789ULL;  // 2026-11-22T16:00:00.123456789Z

FlowInfo flow() {
  FlowInfo f;
  f.direction = Direction::kServer;
  f.workload = {42, "/kubepods.slice/pod-a"};
  f.local = {"::1", 8080};
  f.remote = {"127.0.0.1", 51000};
  return f;
}

TEST(JsonLines, HttpRecordWithEveryField) {
  FlowInfo f = flow();
  f.tls = TlsInfo{"api.test", "TLS1.3", "h2"};
  HttpRecord r;
  r.flow = &f;
  r.ts_ns = kTs;
  r.method = "GET";
  r.path = "/users/1?x=y";
  r.host = "api.test";
  r.status = 200;
  r.version = "1.1";
  r.latency_us = 12;
  r.request_bytes = 80;
  r.response_bytes = 900;
  r.credential.scheme = credentials::Scheme::kJwt;
  r.credential.fingerprint = "00112233445566778899aabbccddeeff";
  r.credential.source = "header:authorization";
  r.credential.jwt = credentials::JwtClaims{.alg = "RS256", .iss = "https://idp", .sub = "svc-a", .exp = 1800000000};
  EXPECT_EQ(toJson(r),
            R"({"ts":"2026-11-22T16:00:00.123456Z","type":"http","direction":"server",)"
            R"("workload":{"cgroup_id":42,"cgroup_path":"/kubepods.slice/pod-a"},)"
            R"("local":{"ip":"::1","port":8080},"remote":{"ip":"127.0.0.1","port":51000},)"
            R"("http":{"method":"GET","path":"/users/1?x=y","host":"api.test","status":200,"version":"1.1",)"
            R"("latency_us":12,"request_bytes":80,"response_bytes":900},)"
            R"("credential":{"scheme":"jwt","fingerprint":"00112233445566778899aabbccddeeff",)"
            R"("source":"header:authorization","jwt":{"alg":"RS256","iss":"https://idp","sub":"svc-a","exp":1800000000}},)"
            R"("tls":{"sni":"api.test","version":"TLS1.3","alpn":"h2"}})");
}

TEST(JsonLines, AbsentValuesAreOmitted) {
  FlowInfo f = flow();
  f.workload.cgroup_path.reset();
  HttpRecord r;
  r.flow = &f;
  r.ts_ns = kTs;
  r.method = "POST";
  r.path = "/";
  r.version = "1.0";
  auto json = nlohmann::json::parse(toJson(r));
  EXPECT_FALSE(json["workload"].contains("cgroup_path"));
  EXPECT_FALSE(json["http"].contains("host"));
  EXPECT_FALSE(json["http"].contains("status"));
  EXPECT_FALSE(json.contains("tls"));
  EXPECT_EQ(json["credential"]["scheme"], "none");
}

TEST(JsonLines, ConnectionRecord) {
  FlowInfo f = flow();
  ConnectionRecord r;
  r.flow = &f;
  r.ts_ns = kTs;
  r.bytes_sent = 1;
  r.bytes_received = 2;
  r.duration_us = 3;
  r.srtt_us = 4;
  r.retransmits = 5;
  r.http_requests = 6;
  EXPECT_EQ(toJson(r),
            R"({"ts":"2026-11-22T16:00:00.123456Z","type":"connection","direction":"server",)"
            R"("workload":{"cgroup_id":42,"cgroup_path":"/kubepods.slice/pod-a"},)"
            R"("local":{"ip":"::1","port":8080},"remote":{"ip":"127.0.0.1","port":51000},)"
            R"("bytes_sent":1,"bytes_received":2,"duration_us":3,"srtt_us":4,"retransmits":5,"http_requests":6})");
}

// A GET record of flow f, its path left to the test.
HttpRecord get(const FlowInfo& f) {
  HttpRecord r;
  r.flow = &f;
  r.method = "GET";
  r.version = "1.1";
  return r;
}

TEST(JsonLines, HostileStringsStayValidJson) {
  FlowInfo f = flow();
  HttpRecord r = get(f);
  r.path = std::string("/a\"b\\c\x01\x1f\n") + "\xff\xfe" + "caf\xc3\xa9" + "\xe2\x82";
  std::string json = toJson(r);
  EXPECT_NE(json.find(R"("path":"/a\"b\\c\u0001\u001f\u000a\ufffd\ufffdcafé\ufffd\ufffd")"), std::string::npos) << json;
  EXPECT_TRUE(nlohmann::json::parse(json).is_object());
}

// Every byte value at every offset of a word-sized scan (and past it): plain ASCII comes out as is,
// quotes and backslashes escaped, controls as \u00XX, a lone non-ASCII byte as U+FFFD.
TEST(JsonLines, EveryByteAtEveryOffsetIsEscapedExactly) {
  FlowInfo f = flow();
  HttpRecord r = get(f);
  for (int c = 0; c < 256; ++c) {
    for (size_t at = 0; at < 19; ++at) {
      r.path = std::string(19, 'a');
      r.path[at] = static_cast<char>(c);
      auto parsed = nlohmann::json::parse(toJson(r));
      std::string expected = r.path;
      if (c >= 0x80) expected.replace(at, 1, "\xef\xbf\xbd");
      ASSERT_EQ(parsed["http"]["path"], expected) << "byte " << c << " at " << at;
    }
  }
}

TEST(JsonLines, Timestamps) {
  EXPECT_EQ(formatTimestamp(0), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(formatTimestamp(kTs), "2026-11-22T16:00:00.123456Z");
  EXPECT_EQ(formatTimestamp(kTs + 1'000'000'000ULL), "2026-11-22T16:00:01.123456Z");
}

TEST(JsonLines, WritesOneParsableLinePerRecord) {
  std::string path = "/tmp/apiwarden-json-" + std::to_string(getpid()) + ".jsonl";
  unlink(path.c_str());
  FlowInfo f = flow();
  {
    auto writer = JsonLinesWriter::open(path);
    ASSERT_TRUE(writer);
    HttpRecord r;
    r.flow = &f;
    r.method = "GET";
    r.version = "1.1";
    for (int i = 0; i < 100; ++i) {
      r.path = "/" + std::to_string(i);
      (*writer)->write(r);
    }
    (*writer)->sync();
    EXPECT_EQ((*writer)->written(), 100u);
  }
  std::ifstream in(path);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) EXPECT_EQ(nlohmann::json::parse(line)["http"]["path"], "/" + std::to_string(n++));
  EXPECT_EQ(n, 100);
  unlink(path.c_str());
}

// An output nobody reads (a pipe) blocks the writer thread, never the caller: beyond the backlog
// whole chunks are dropped and counted, and once the reader comes every line is either in the
// output or counted, in order.
TEST(JsonLines, ABlockedOutputNeverBlocksTheCallerAndDropsAreCounted) {
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  auto writer = JsonLinesWriter::open("/proc/self/fd/" + std::to_string(fds[1]));
  ASSERT_TRUE(writer);
  close(fds[1]);
  FlowInfo f = flow();
  HttpRecord r = get(f);
  r.path = "/" + std::string(900, 'p');  // about 1 KiB a line
  const uint64_t lines = 2 * JsonLinesWriter::kMaxBacklogBytes / 1024;
  for (uint64_t i = 0; i < lines; ++i) (*writer)->write(r);  // returns: the pipe is full after 64 KiB
  (*writer)->flush();
  EXPECT_GT((*writer)->writeErrors(), lines / 4);
  uint64_t read_lines = 0;
  std::thread reader([&] {
    char buf[1 << 16];
    for (ssize_t n; (n = read(fds[0], buf, sizeof(buf))) > 0;) read_lines += std::count(buf, buf + n, '\n');
  });
  uint64_t written = 0, errors = 0;
  (*writer)->sync();
  written = (*writer)->written();
  errors = (*writer)->writeErrors();
  writer->reset();  // closes the pipe: the reader sees its end
  reader.join();
  close(fds[0]);
  EXPECT_EQ(written + errors, lines);
  EXPECT_EQ(read_lines, written);
  EXPECT_GT(written, 0u);
}

TEST(JsonLines, UnwritablePathIsAnError) {
  auto writer = JsonLinesWriter::open("/nonexistent-dir/records.jsonl");
  ASSERT_FALSE(writer);
  EXPECT_EQ(writer.error().code(), ENOENT);
}

}  // namespace
}  // namespace apiwarden::records
