// Route templates, the alert log's dedupe, and the detectors over synthetic record streams.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/detect/baseline_store.h"
#include "agent/detect/config.h"
#include "agent/detect/engine.h"

namespace apiwarden::detect {
namespace {

constexpr uint64_t kSecond = 1'000'000'000ULL;
constexpr uint64_t kStart = 1'800'000'000ULL * kSecond;  // 2027-01-15

TEST(RouteOf, ObjectIdsCollapseAndTheQueryIsDropped) {
  EXPECT_EQ(routeOf("/users/123/orders/9?x=1").template_, "/users/{id}/orders/{id}");
  EXPECT_EQ(routeOf("/users/123/orders/9?x=1").last_id, "9");
  EXPECT_EQ(routeOf("/v1/items/3f2a9c1e-7b4d-4e8a-9c0f-1a2b3c4d5e6f").template_, "/v1/items/{id}");
  EXPECT_EQ(routeOf("/blobs/deadbeefdeadbeef00").template_, "/blobs/{id}");
  EXPECT_EQ(routeOf("/share/aGVsbG8gd29ybGQgMTIzNDU2").template_, "/share/{id}");
  EXPECT_EQ(routeOf("/v2/users/me").template_, "/v2/users/me");  // words stay
  EXPECT_EQ(routeOf("/cafe").template_, "/cafe");                // short hex is a word
  EXPECT_EQ(routeOf("/api/health-check-endpoint").template_, "/api/health-check-endpoint");
  EXPECT_EQ(routeOf("").template_, "/");
  EXPECT_EQ(routeOf("/a//b/").template_, "/a//b/");
}

TEST(RouteTable, CapsTemplatesPerService) {
  RouteTable table(2);
  EXPECT_EQ(table.intern("svc", "/a"), "/a");
  EXPECT_EQ(table.intern("svc", "/b"), "/b");
  EXPECT_EQ(table.intern("svc", "/a"), "/a");
  EXPECT_EQ(table.intern("svc", "/c"), "{other}");
  EXPECT_EQ(table.intern("other-svc", "/c"), "/c");
  EXPECT_EQ(table.overflowed(), 1u);
}

// Saved baselines are keyed by these hashes: they must never change from one build to the next.
TEST(StableHash, ValuesArePinned) {
  EXPECT_EQ(stableHash(""), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(stableHash("a"), 0xb8ae4ce910b95652ULL);
  EXPECT_EQ(stableHash("abcdefgh"), 0x3c4498de32079a64ULL);
  EXPECT_EQ(stableHash("abcdefghi"), 0x7a2df9b6e834e5c2ULL);
  EXPECT_EQ(stableHash("cgroup:/kubepods.slice/caller-7 cgroup:/kubepods.slice/service-1 GET /api/v1/resource3/{id}"),
            0x99e35446afc3ae00ULL);
}

TEST(HashCounts, CountsDistinctHashesThroughCollisionsAndRemovals) {
  HashCounts counts;
  // Hashes sharing their low bits probe into one run; removing from its middle must not lose the rest.
  std::vector<uint64_t> hashes;
  for (uint64_t i = 0; i < 100; ++i) hashes.push_back(i << 20 | (i % 3));
  for (uint64_t hash : hashes) counts.add(hash);
  counts.add(hashes[5]);
  EXPECT_EQ(counts.distinct(), 100u);
  counts.remove(hashes[5]);
  EXPECT_EQ(counts.distinct(), 100u);  // one copy is left
  for (size_t i = 0; i < hashes.size(); i += 2) counts.remove(hashes[i]);
  EXPECT_EQ(counts.distinct(), 50u);
  for (size_t i = 1; i < hashes.size(); i += 2) counts.add(hashes[i]);  // present: no new distinct hash
  EXPECT_EQ(counts.distinct(), 50u);
  for (size_t i = 1; i < hashes.size(); i += 2) counts.remove(hashes[i]);
  EXPECT_EQ(counts.distinct(), 50u);
  for (size_t i = 1; i < hashes.size(); i += 2) counts.remove(hashes[i]);
  EXPECT_EQ(counts.distinct(), 0u);
  counts.remove(42);  // never added: nothing happens
  EXPECT_EQ(counts.distinct(), 0u);
}

struct NullSink final : records::RecordSink {
  size_t http = 0;
  void write(const records::HttpRecord&) override { ++http; }
  void write(const records::ConnectionRecord&) override {}
  void flush() override {}
};

records::Workload workload(uint64_t id, const std::string& path) {
  records::Workload w;
  w.cgroup_id = id;
  w.cgroup_path = path;
  return w;
}

class DetectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/apiwarden-detect-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    start({});
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void start(DetectOptions options) {
    engine_.reset();
    log_.reset();
    options.alert_window_ns = 60 * kSecond;
    log_ = std::move(*AlertLog::open(dir_ + "/alerts.jsonl", options.alert_window_ns));
    engine_ = std::make_unique<DetectionEngine>(sink_, *log_, options);
  }

  // The alerts written so far, of one detector or (empty) all.
  std::vector<nlohmann::json> alerts(const std::string& detector = "") {
    log_->flush();
    std::vector<nlohmann::json> out;
    std::ifstream in(dir_ + "/alerts.jsonl");
    for (std::string line; std::getline(in, line);) {
      auto alert = nlohmann::json::parse(line);
      if (detector.empty() || alert["detector"] == detector) out.push_back(std::move(alert));
    }
    return out;
  }

  // One exchange as seen by `direction`'s end; flow_ lives as long as the call.
  void exchange(records::Direction direction, const records::Workload& self, uint64_t ts, std::string path,
                uint16_t status, credentials::Credential credential = {},
                std::optional<records::Workload> peer = std::nullopt, std::string scope = "node",
                std::string method = "GET") {
    records::FlowInfo flow;
    flow.direction = direction;
    flow.workload = self;
    flow.remote = {"127.0.0.1", 8080};
    flow.peer.scope = std::move(scope);
    flow.peer.workload = std::move(peer);
    records::HttpRecord record;
    record.flow = &flow;
    record.ts_ns = ts;
    record.method = std::move(method);
    record.path = std::move(path);
    record.status = status;
    record.credential = std::move(credential);
    record.response_bytes = response_bytes_;
    engine_->write(record);
  }

  static credentials::Credential bearer(const std::string& fingerprint) {
    return {credentials::Scheme::kBearer, fingerprint, "header:authorization", "", std::nullopt};
  }

  std::string dir_;
  uint64_t response_bytes_ = 2000;  // of the next exchanges
  NullSink sink_;
  std::unique_ptr<AlertLog> log_;
  std::unique_ptr<DetectionEngine> engine_;
  records::Workload api_ = workload(10, "/demo/api"), billing_ = workload(11, "/demo/billing"),
                    reports_ = workload(12, "/demo/reports");
};

TEST_F(DetectTest, SharedCredentialNamesBothWorkloadsOnceAndCountsRepeats) {
  using records::Direction;
  for (int i = 0; i < 5; ++i) exchange(Direction::kClient, billing_, kStart + i * kSecond, "/api/x", 200, bearer("f1"));
  // The server's view of the same calls names the same caller: still one identity.
  exchange(Direction::kServer, api_, kStart + 5 * kSecond, "/api/x", 200, bearer("f1"), billing_);
  EXPECT_TRUE(alerts().empty());

  exchange(Direction::kClient, reports_, kStart + 10 * kSecond, "/api/x", 200, bearer("f1"));
  exchange(Direction::kClient, reports_, kStart + 11 * kSecond, "/api/x", 200, bearer("f1"));
  auto got = alerts();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["detector"], "shared_credential");
  EXPECT_EQ(got[0]["severity"], "high");
  EXPECT_EQ(got[0]["summary"],
            "bearer credential f1 presented by 2 workloads: cgroup:/demo/billing, cgroup:/demo/reports");
  EXPECT_EQ(got[0]["credential"], (nlohmann::json{{"scheme", "bearer"}, {"fingerprint", "f1"}}));
  EXPECT_EQ(got[0]["workload"]["cgroup_path"], "/demo/reports");
  EXPECT_EQ(got[0]["evidence"]["presenters"][0]["records"], 6);
  EXPECT_EQ(got[0]["evidence"]["presenters"][1]["records"], 1);
  EXPECT_EQ(got[0]["dedupe_key"], "shared_credential/f1");
  EXPECT_EQ(got[0]["count"], 1);

  // After the alert window the next repeat is written again, with the count so far.
  exchange(Direction::kClient, reports_, kStart + 75 * kSecond, "/api/x", 200, bearer("f1"));
  got = alerts();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1]["count"], 3);
}

TEST_F(DetectTest, UnnamedLocalCallersAndOldPresentersDoNotMakeACredentialShared) {
  using records::Direction;
  exchange(Direction::kClient, billing_, kStart, "/api/x", 200, bearer("f2"));
  exchange(Direction::kServer, api_, kStart + kSecond, "/api/x", 200, bearer("f2"));  // peer unknown
  DetectOptions short_window;
  short_window.shared_window_ns = 10 * kSecond;
  start(short_window);
  exchange(Direction::kClient, billing_, kStart, "/api/x", 200, bearer("f3"));
  exchange(Direction::kClient, reports_, kStart + 20 * kSecond, "/api/x", 200, bearer("f3"));  // billing aged out
  EXPECT_TRUE(alerts().empty());
}

TEST_F(DetectTest, StaleJwts) {
  using records::Direction;
  auto jwt = [](std::optional<int64_t> iat, std::optional<int64_t> exp, const std::string& fp) {
    credentials::Credential c{credentials::Scheme::kJwt, fp, "header:authorization", "", credentials::JwtClaims{}};
    c.jwt->iss = "https://issuer";
    c.jwt->sub = "svc";
    c.jwt->iat = iat;
    c.jwt->exp = exp;
    return c;
  };
  int64_t now = static_cast<int64_t>(kStart / kSecond);
  exchange(Direction::kClient, billing_, kStart, "/a", 200, jwt(now - 60, now + 600, "ok"));  // fine
  exchange(Direction::kClient, billing_, kStart, "/a", 200, jwt(now - 60, std::nullopt, "forever"));
  exchange(Direction::kClient, billing_, kStart, "/a", 200, jwt(now - 7200, now - 3600, "expired"));
  exchange(Direction::kClient, billing_, kStart, "/a", 401, jwt(now - 7200, now - 3600, "expired-refused"));
  exchange(Direction::kClient, billing_, kStart, "/a", 200, jwt(now, now + 30 * 86400, "long"));
  auto got = alerts();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0]["evidence"]["reason"], "no_expiry");
  EXPECT_EQ(got[0]["summary"], "JWT without an expiry (a forever token), issuer https://issuer, subject svc");
  EXPECT_EQ(got[1]["evidence"]["reason"], "expired_accepted");
  EXPECT_EQ(got[1]["severity"], "high");
  EXPECT_EQ(got[2]["evidence"]["reason"], "long_lived");
  EXPECT_EQ(got[2]["summary"], "JWT valid for 720 h (limit 24 h), issuer https://issuer, subject svc");
  for (const auto& alert : got) EXPECT_EQ(alert["detector"], "stale_credential");
}

TEST_F(DetectTest, AJwtIdSeenInAnotherTokenOrFromAnotherWorkloadIsAReplay) {
  using records::Direction;
  int64_t now = static_cast<int64_t>(kStart / kSecond);
  auto jwt = [&](const std::string& fingerprint, const std::string& jti) {
    credentials::Credential c{credentials::Scheme::kJwt, fingerprint, "header:authorization", "",
                              credentials::JwtClaims{}};
    c.jwt->iss = "https://idp";
    c.jwt->jti = jti;
    c.jwt->iat = now - 60;
    c.jwt->exp = now + 600;
    return c;
  };
  exchange(Direction::kClient, billing_, kStart, "/a", 200, jwt("token-a", "j1"));
  exchange(Direction::kClient, billing_, kStart + kSecond, "/a", 200, jwt("token-a", "j1"));        // reuse: normal
  exchange(Direction::kServer, api_, kStart + kSecond, "/a", 200, jwt("token-a", "j1"), billing_);  // other end
  exchange(Direction::kClient, billing_, kStart + kSecond, "/a", 200, jwt("token-c", "j2"));
  EXPECT_TRUE(alerts("stale_credential").empty());
  exchange(Direction::kClient, billing_, kStart + 2 * kSecond, "/a", 200, jwt("token-b", "j1"));  // minted twice
  exchange(Direction::kClient, reports_, kStart + 3 * kSecond, "/a", 200, jwt("token-c", "j2"));  // replayed
  auto got = alerts("stale_credential");
  ASSERT_EQ(got.size(), 2u);
  for (const auto& alert : got) EXPECT_EQ(alert["evidence"]["reason"], "jti_replayed");
  EXPECT_EQ(got[0]["credential"]["fingerprint"], "token-b");
  EXPECT_EQ(got[1]["identity"], "cgroup:/demo/reports");  // the workload that replayed it
}

TEST_F(DetectTest, UnauthenticatedAccessAfterLearningOnAProtectedRoute) {
  using records::Direction;
  DetectOptions options;
  options.learning_ns = 30 * kSecond;
  options.min_authenticated = 3;
  start(options);
  for (int i = 0; i < 3; ++i) {
    exchange(Direction::kServer, api_, kStart + i * kSecond, "/users/" + std::to_string(i), 200, bearer("f"), billing_);
  }
  exchange(Direction::kServer, api_, kStart + 5 * kSecond, "/users/9", 200, {}, billing_);    // still learning
  exchange(Direction::kServer, api_, kStart + 40 * kSecond, "/health", 200, {}, billing_);    // never protected
  exchange(Direction::kServer, api_, kStart + 41 * kSecond, "/users/10", 401, {}, billing_);  // refused: fine
  EXPECT_TRUE(alerts("unauthenticated_access").empty());

  exchange(Direction::kServer, api_, kStart + 42 * kSecond, "/users/11", 200, {}, reports_);
  auto got = alerts("unauthenticated_access");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["detector"], "unauthenticated_access");
  EXPECT_EQ(
      got[0]["summary"],
      "GET /users/{id} answered 200 without any credential on a route whose successful responses carry credentials");
  EXPECT_EQ(got[0]["evidence"]["caller"], "cgroup:/demo/reports");
  EXPECT_EQ(got[0]["evidence"]["authenticated_2xx"], 3);
  EXPECT_EQ(got[0]["evidence"]["schemes_seen"], (nlohmann::json{"bearer"}));
}

TEST_F(DetectTest, CredentialLessSuccessFromOutsideTheClusterAlertsAtOnce) {
  exchange(records::Direction::kServer, api_, kStart, "/metrics", 200, {}, std::nullopt, "external");
  auto got = alerts();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["summary"], "GET /metrics answered 200 without any credential from outside the cluster");
  EXPECT_EQ(got[0]["evidence"]["caller"], "ip:127.0.0.1");
  EXPECT_EQ(sink_.http, 1u);  // records pass through to the writer
}

TEST_F(DetectTest, ObjectEnumerationAgainstWhatTheCallerDidWhileLearning) {
  using records::Direction;
  DetectOptions options;
  options.learning_ns = 10 * kSecond;
  options.enumeration_threshold = 30;
  start(options);
  // billing reads 20 invoices in a burst as a matter of course (learnt: its threshold becomes 40).
  for (int i = 0; i < 20; ++i) {
    exchange(Direction::kServer, api_, kStart + i * 100'000'000ULL, "/invoices/" + std::to_string(1000 + i), 200,
             bearer("fb"), billing_);
  }
  for (int i = 0; i < 35; ++i) {
    exchange(Direction::kServer, api_, kStart + 70 * kSecond + i * 100'000'000ULL,
             "/invoices/" + std::to_string(2000 + i), 200, bearer("fb"), billing_);
  }
  EXPECT_TRUE(alerts("object_enumeration").empty());
  // reports walks sequential ids, mostly refused.
  for (int i = 0; i < 29; ++i) {
    exchange(Direction::kServer, api_, kStart + 80 * kSecond + i * 10'000'000ULL, "/invoices/" + std::to_string(i + 1),
             i % 4 == 0 ? 200 : 404, bearer("fr"), reports_);
  }
  EXPECT_TRUE(alerts("object_enumeration").empty());
  exchange(Direction::kServer, api_, kStart + 81 * kSecond, "/invoices/30", 404, bearer("fr"), reports_);
  exchange(Direction::kServer, api_, kStart + 81 * kSecond, "/invoices/31", 404, bearer("fr"), reports_);
  auto got = alerts("object_enumeration");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["severity"], "high");
  EXPECT_EQ(got[0]["identity"], "cgroup:/demo/reports");
  EXPECT_EQ(got[0]["summary"],
            "cgroup:/demo/reports touched 30 distinct ids on GET /invoices/{id} of cgroup:/demo/api within 60 s");
  EXPECT_EQ(got[0]["evidence"]["distinct_ids"], 30);
  EXPECT_EQ(got[0]["evidence"]["sequential_share"], 1.0);
  EXPECT_EQ(got[0]["evidence"]["last_ids"], (nlohmann::json{"26", "27", "28", "29", "30"}));
  EXPECT_EQ(got[0]["credential"]["fingerprint"], "fr");
}

TEST_F(DetectTest, AuthFailureBurstWithinTheWindowOnly) {
  using records::Direction;
  DetectOptions options;
  options.auth_failure_threshold = 20;
  start(options);
  // 19 failures spread over two minutes: never 20 within 60 s.
  for (int i = 0; i < 19; ++i) {
    exchange(Direction::kServer, api_, kStart + i * 7 * kSecond, "/login", 401, bearer("x"), reports_);
  }
  EXPECT_TRUE(alerts("auth_failure_burst").empty());
  for (int i = 0; i < 20; ++i) {
    exchange(Direction::kServer, api_, kStart + 200 * kSecond + i * kSecond, "/admin", 403, bearer("x"), reports_);
  }
  auto got = alerts("auth_failure_burst");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["evidence"]["failures"], 20);
  EXPECT_EQ(got[0]["evidence"]["last"]["status"], 403);
}

TEST_F(DetectTest, NewEndpointsAndPeersAfterTheCallersOwnLearningPeriod) {
  using records::Direction;
  DetectOptions options;
  options.learning_ns = 10 * kSecond;
  start(options);
  exchange(Direction::kServer, api_, kStart, "/invoices/1", 200, bearer("fb"), billing_);
  exchange(Direction::kServer, api_, kStart + 20 * kSecond, "/invoices/2", 200, bearer("fb"), billing_);  // known
  exchange(Direction::kServer, api_, kStart + 21 * kSecond, "/reports", 200, bearer("fb"), billing_);
  exchange(Direction::kServer, api_, kStart + 22 * kSecond, "/invoices/3", 200, bearer("fb"), billing_, "node",
           "DELETE");
  // A client-side call to a service off the node: a new peer.
  exchange(Direction::kClient, billing_, kStart + 23 * kSecond, "/v1/charges", 200, bearer("fb"), std::nullopt,
           "external");
  // reports is new: it learns first, whatever it calls.
  exchange(Direction::kServer, api_, kStart + 24 * kSecond, "/admin/users", 200, bearer("fr"), reports_);

  auto endpoints = alerts("new_endpoint");
  ASSERT_EQ(endpoints.size(), 3u);
  EXPECT_EQ(endpoints[0]["summary"], "cgroup:/demo/billing used GET /reports of cgroup:/demo/api for the first time");
  EXPECT_EQ(endpoints[0]["severity"], "low");
  EXPECT_EQ(endpoints[1]["summary"],
            "cgroup:/demo/billing used DELETE /invoices/{id} of cgroup:/demo/api for the first time "
            "(administrative or write access)");
  EXPECT_EQ(endpoints[1]["severity"], "high");
  EXPECT_EQ(endpoints[2]["evidence"]["service"], "ip:127.0.0.1:8080");
  auto peers = alerts("new_peer");
  ASSERT_EQ(peers.size(), 1u);
  EXPECT_EQ(peers[0]["summary"], "cgroup:/demo/billing called ip:127.0.0.1:8080 for the first time");
}

TEST_F(DetectTest, ACredentialUsedWhereItNeverWasIsNewEvenIfTheCallerWasThere) {
  using records::Direction;
  DetectOptions options;
  options.learning_ns = 10 * kSecond;
  start(options);
  exchange(Direction::kServer, api_, kStart, "/invoices/1", 200, bearer("token-a"), billing_);
  exchange(Direction::kServer, api_, kStart, "/reports", 200, bearer("token-b"), billing_);
  exchange(Direction::kServer, api_, kStart + 20 * kSecond, "/invoices/2", 200, bearer("token-a"), billing_);
  exchange(Direction::kServer, api_, kStart + 21 * kSecond, "/reports", 200, bearer("token-b"), billing_);
  EXPECT_TRUE(alerts().empty());
  exchange(Direction::kServer, api_, kStart + 22 * kSecond, "/reports", 200, bearer("token-a"), billing_);
  auto got = alerts("new_endpoint");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(
      got[0]["summary"],
      "bearer credential token-a (cgroup:/demo/billing) used GET /reports of cgroup:/demo/api for the first time");
  EXPECT_EQ(got[0]["dedupe_key"], "new_endpoint/credential:token-a/cgroup:/demo/api GET /reports");
}

TEST_F(DetectTest, RateAndErrorSpikesAgainstTheCallersOwnRate) {
  using records::Direction;
  DetectOptions options;
  options.learning_ns = 60 * kSecond;
  start(options);
  // Five requests a second for two minutes, with the odd 500.
  for (uint64_t t = 0; t < 120; ++t) {
    for (int i = 0; i < 5; ++i) {
      exchange(Direction::kServer, api_, kStart + t * kSecond + i * 150'000'000ULL, "/orders",
               t % 30 == 0 && i == 0 ? 500 : 200, bearer("fb"), billing_);
    }
  }
  EXPECT_TRUE(alerts().empty());
  // Then 200 in one second, the last 40 of them failing.
  for (int i = 0; i < 200; ++i) {
    exchange(Direction::kServer, api_, kStart + 120 * kSecond + i * 4'000'000ULL, "/orders", i >= 160 ? 503 : 200,
             bearer("fb"), billing_);
  }
  auto rate = alerts("rate_spike");
  ASSERT_EQ(rate.size(), 1u);
  EXPECT_EQ(rate[0]["evidence"]["requests_this_second"], 51);  // alerted the moment it crossed the floor of 50
  EXPECT_EQ(rate[0]["identity"], "cgroup:/demo/billing");
  auto errors = alerts("error_spike");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0]["evidence"]["errors_this_second"], 11);
  EXPECT_EQ(errors[0]["evidence"]["last"]["status"], 503);
  EXPECT_EQ(alerts().size(), 2u);
}

TEST_F(DetectTest, ExfiltrationSizedResponse) {
  using records::Direction;
  DetectOptions options;
  options.learning_ns = 10 * kSecond;
  start(options);
  for (int i = 0; i < 30; ++i) {
    response_bytes_ = 1500 + static_cast<uint64_t>(i) * 20;
    exchange(Direction::kServer, api_, kStart + static_cast<uint64_t>(i) * kSecond, "/export/" + std::to_string(i), 200,
             bearer("fb"), billing_);
  }
  response_bytes_ = 900'000;  // large, but under the 1 MiB floor
  exchange(Direction::kServer, api_, kStart + 31 * kSecond, "/export/77", 200, bearer("fb"), billing_);
  EXPECT_TRUE(alerts("response_volume").empty());
  response_bytes_ = 50'000'000;
  exchange(Direction::kServer, api_, kStart + 32 * kSecond, "/export/78", 200, bearer("fb"), billing_);
  auto got = alerts("response_volume");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["severity"], "high");
  EXPECT_EQ(got[0]["evidence"]["response_bytes"], 50'000'000);
  EXPECT_EQ(got[0]["evidence"]["route"], "/export/{id}");
}

}  // namespace
}  // namespace apiwarden::detect

namespace apiwarden::detect {
namespace {

class BaselineStoreTest : public DetectTest {
 protected:
  std::string path() const { return dir_ + "/baseline.pb"; }
  void write(const std::string& bytes) { std::ofstream(path(), std::ios::binary) << bytes; }
};

TEST_F(BaselineStoreTest, WhatWasLearntSurvivesARestart) {
  using records::Direction;
  DetectOptions options;
  options.learning_ns = 10 * kSecond;
  start(options);
  exchange(Direction::kServer, api_, kStart, "/invoices/1", 200, bearer("fb"), billing_);
  ASSERT_TRUE(saveBaseline(path(), *engine_));

  // A new engine (a restarted agent) with the baseline: billing is known, its learning is over.
  start(options);
  auto loaded = loadBaseline(path(), *engine_);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->outcome, LoadOutcome::kLoaded);
  exchange(Direction::kServer, api_, kStart + 20 * kSecond, "/invoices/2", 200, bearer("fb"), billing_);
  EXPECT_TRUE(alerts("new_endpoint").empty());
  exchange(Direction::kServer, api_, kStart + 21 * kSecond, "/reports", 200, bearer("fb"), billing_);
  EXPECT_EQ(alerts("new_endpoint").size(), 1u);

  // Without it the same traffic would be learnt from scratch: no alert.
  start(options);
  exchange(Direction::kServer, api_, kStart + 20 * kSecond, "/refunds", 200, bearer("fb"), billing_);
  EXPECT_EQ(alerts("new_endpoint").size(), 1u);
}

TEST_F(BaselineStoreTest, AStaticKeysAgeCountsFromItsFirstUseAcrossRestarts) {
  using records::Direction;
  exchange(Direction::kClient, billing_, kStart, "/a", 200, bearer("old-key"));
  ASSERT_TRUE(saveBaseline(path(), *engine_));
  start({});
  ASSERT_TRUE(loadBaseline(path(), *engine_));
  exchange(Direction::kClient, billing_, kStart + 91 * 86400 * kSecond, "/a", 200, bearer("old-key"));
  auto got = alerts("stale_credential");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["evidence"]["reason"], "static_age");
  EXPECT_EQ(got[0]["summary"], "static bearer credential in use for 91 days (limit 90): never rotated");
}

TEST_F(BaselineStoreTest, CorruptForeignAndNewerFilesAreSetAsideNotTrusted) {
  proto::StateFile foreign;
  foreign.set_kind("something.else");
  foreign.set_version(kBaselineVersion);
  proto::StateFile newer;
  newer.set_kind("apiwarden.baseline");
  newer.set_version(kBaselineVersion + 1);
  for (const std::string& bytes :
       {std::string("\xff\xff\xff garbage", 12), foreign.SerializeAsString(), newer.SerializeAsString()}) {
    write(bytes);
    auto loaded = loadBaseline(path(), *engine_);
    ASSERT_TRUE(loaded);
    EXPECT_EQ(loaded->outcome, LoadOutcome::kSetAside);
    EXPECT_FALSE(std::filesystem::exists(path()));
  }
  size_t set_aside = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    set_aside += entry.path().filename().string().starts_with("baseline.pb.rejected-");
  }
  EXPECT_EQ(set_aside, 3u);  // each kept under a name of its own
  auto missing = loadBaseline(dir_ + "/none.pb", *engine_);
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->outcome, LoadOutcome::kFresh);
}

}  // namespace
}  // namespace apiwarden::detect

namespace apiwarden::detect {
namespace {

TEST(DetectConfig, ParsesOwnersAndSuppressions) {
  auto config = parseDetectConfig(R"(
credentials:
  - fingerprint: f1
    owner: cgroup:/demo/billing
  - jwt_sub: reports-svc
    owner: cgroup:/demo/reports
suppressions:
  - detector: new_endpoint
    identity: cgroup:/demo/batch
    until: 2027-01-31T00:00:00Z
)");
  ASSERT_TRUE(config) << config.error().describe();
  ASSERT_EQ(config->owners.size(), 2u);
  EXPECT_EQ(config->owners[1].jwt_sub, "reports-svc");
  ASSERT_EQ(config->suppressions.size(), 1u);
  EXPECT_EQ(config->suppressions[0].until_ns, 1'801'353'600ULL * 1'000'000'000ULL);  // date -d 2027-01-31Z +%s
  EXPECT_TRUE(parseDetectConfig("")->owners.empty());
}

TEST(DetectConfig, RefusesWhatItCannotMeanWithTheLine) {
  for (auto [yaml, message] : std::initializer_list<std::pair<const char*, const char*>>{
           {"credentials: {}", "credentials at line 1 must be a list"},
           {"owners: []", "unknown key \"owners\" at line 1"},
           {"credentials:\n  - owner: x", "needs an owner and exactly one of fingerprint"},
           {"credentials:\n  - fingerprint: a\n    jwt_sub: b\n    owner: x", "exactly one of"},
           {"suppressions:\n  - until: 2027-01-01T00:00:00Z", "would silence everything"},
           {"suppressions:\n  - detector: no_such", "unknown detector \"no_such\" at line 2"},
           {"suppressions:\n  - detector: new_peer\n    until: tomorrow", "until at line 3 must be RFC 3339"},
           {"[unclosed", "not YAML"},
       }) {
    auto config = parseDetectConfig(yaml);
    ASSERT_FALSE(config) << yaml;
    EXPECT_NE(config.error().describe().find(message), std::string::npos) << config.error().describe();
  }
}

TEST_F(DetectTest, CredentialWrongWorkloadDeclaredOrLearnt) {
  using records::Direction;
  DetectOptions options;
  options.learning_ns = 10 * kSecond;
  options.config.owners.push_back({"declared-fp", "", "", "cgroup:/demo/billing"});
  start(options);
  exchange(Direction::kClient, billing_, kStart, "/a", 200, bearer("declared-fp"));
  exchange(Direction::kClient, billing_, kStart, "/a", 200, bearer("learnt-fp"));
  exchange(Direction::kClient, reports_, kStart + kSecond, "/a", 200, bearer("declared-fp"));  // declared: at once
  exchange(Direction::kClient, reports_, kStart + 20 * kSecond, "/a", 200, bearer("learnt-fp"));
  auto got = alerts("credential_wrong_workload");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0]["summary"],
            "bearer credential declared presented by cgroup:/demo/reports, not by its owner cgroup:/demo/billing");
  EXPECT_EQ(got[0]["evidence"]["owner_from"], "fingerprint");
  EXPECT_EQ(got[1]["summary"],
            "bearer credential learnt-f presented by cgroup:/demo/reports, not by cgroup:/demo/billing, which it was "
            "learnt with");
}

TEST_F(DetectTest, SuppressionsHoldAlertsBackUntilTheyExpire) {
  using records::Direction;
  DetectOptions options;
  options.config.suppressions.push_back({"shared_credential", "cgroup:/demo/reports", "", kStart + 100 * kSecond});
  start(options);
  exchange(Direction::kClient, billing_, kStart, "/a", 200, bearer("s1"));
  exchange(Direction::kClient, reports_, kStart + kSecond, "/a", 200, bearer("s1"));
  EXPECT_TRUE(alerts("shared_credential").empty());
  EXPECT_EQ(engine_->stats().suppressed, 1u);
  exchange(Direction::kClient, reports_, kStart + 200 * kSecond, "/a", 200, bearer("s1"));  // expired
  EXPECT_EQ(alerts("shared_credential").size(), 1u);
}

}  // namespace
}  // namespace apiwarden::detect
