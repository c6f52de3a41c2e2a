// The enforcement programs (bpf/progs/enforce.bpf.c) on the real kernel: two sibling workload
// cgroups that this test creates, real TCP connections over loopback to listeners in the test
// process (which stays outside the cut subtree), rules written straight into the pinned maps.
// The pins live under a bpffs directory of the test's own and are removed at the end.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "agent/credentials/token_hash.h"
#include "agent/loader/enforce_program.h"

namespace {

namespace fs = std::filesystem;
using apiwarden::loader::EnforceOptions;
using apiwarden::loader::EnforceProgram;

const fs::path kCgroup2 = "/sys/fs/cgroup/unified";

uint64_t bootNs() {
  timespec ts{};
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t cgroupId(const fs::path& dir) {
  struct stat st {};
  return stat(dir.c_str(), &st) == 0 ? st.st_ino : 0;
}

int cgroupLevel(const fs::path& dir) {
  fs::path relative = dir.lexically_relative(kCgroup2);
  return static_cast<int>(std::distance(relative.begin(), relative.end()));
}

// A TCP listener in the test process on loopback (v4 or v6), on an ephemeral port.
struct Listener {
  int fd = -1;
  uint16_t port = 0;
  explicit Listener(int family) {
    fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_storage addr{};
    socklen_t len;
    if (family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&addr);
      a->sin_family = AF_INET;
      a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      len = sizeof(*a);
    } else {
      auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
      a->sin6_family = AF_INET6;
      a->sin6_addr = in6addr_loopback;
      len = sizeof(*a);
    }
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(fd, 128) != 0) return;
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(family == AF_INET ? reinterpret_cast<sockaddr_in*>(&addr)->sin_port
                                   : reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  }
  ~Listener() { ::close(fd); }
};

enum class Target { kV4, kV6, kV4MappedOnV6 };

// A connected (or not) client socket to loopback:port; returns the fd or -errno.
int connectTo(Target target, uint16_t port) {
  int family = target == Target::kV4 ? AF_INET : AF_INET6;
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int rc;
  if (target == Target::kV4) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    rc = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  } else {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    if (target == Target::kV6) {
      a.sin6_addr = in6addr_loopback;
    } else {
      inet_pton(AF_INET6, "::ffff:127.0.0.1", &a.sin6_addr);
    }
    rc = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  }
  if (rc != 0) {
    int err = errno;
    ::close(fd);
    return -err;
  }
  return fd;
}

// Runs fn in a child process that first joins the cgroup (so its sockets belong to it); the
// child's exit code is fn's result.
int inCgroup(const fs::path& cgroup, const std::function<int()>& fn) {
  pid_t pid = fork();
  if (pid == 0) {
    std::ofstream(cgroup / "cgroup.procs") << getpid() << std::flush;
    _exit(fn());
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
}

// 0 when the connect succeeded, else the errno.
int connectErrno(const fs::path& cgroup, Target target, uint16_t port) {
  return inCgroup(cgroup, [&] {
    int fd = connectTo(target, port);
    if (fd < 0) return -fd;
    ::close(fd);
    return 0;
  });
}

// A child in a cgroup that holds one established connection until told to read from it.
struct HeldConnection {
  pid_t pid = -1;
  int to_child = -1, from_child = -1;

  HeldConnection(const fs::path& cgroup, uint16_t port) {
    int down[2], up[2];
    if (pipe(down) != 0 || pipe(up) != 0) return;
    pid = fork();
    if (pid == 0) {
      std::ofstream(cgroup / "cgroup.procs") << getpid() << std::flush;
      int fd = connectTo(Target::kV4, port);
      char ok = fd >= 0 ? 'c' : 'x';
      (void)!write(up[1], &ok, 1);
      char go;
      (void)!read(down[0], &go, 1);
      // Report what a read sees within 1 s: the errno, or 0 when nothing happened.
      pollfd p{fd, POLLIN, 0};
      int ready = poll(&p, 1, 1000);
      int result = 0;
      if (ready > 0) {
        char byte;
        result = recv(fd, &byte, 1, 0) < 0 ? errno : 0;
      }
      _exit(result);
    }
    to_child = down[1];
    from_child = up[0];
    ::close(down[0]);
    ::close(up[1]);
  }
  bool connected() {
    char c = 0;
    return read(from_child, &c, 1) == 1 && c == 'c';
  }
  // The errno the child's read saw (0: the connection is still fine).
  int readResult() {
    char go = 'g';
    (void)!write(to_child, &go, 1);
    int status = 0;
    waitpid(pid, &status, 0);
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
  }
  ~HeldConnection() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    ::close(to_child);
    ::close(from_child);
  }
};

// Connects from the cgroup and writes one request; 0 when the write went through, else its errno.
int requestFrom(const fs::path& cgroup, uint16_t port, const std::string& request) {
  return inCgroup(cgroup, [&] {
    int fd = connectTo(Target::kV4, port);
    if (fd < 0) return -fd;
    int result = send(fd, request.data(), request.size(), MSG_NOSIGNAL) < 0 ? errno : 0;
    ::close(fd);
    return result;
  });
}

std::string request(const std::string& credential_header) {
  return "GET /orders/7 HTTP/1.1\r\nHost: api\r\nUser-Agent: test\r\n" + credential_header + "\r\nAccept: */*\r\n\r\n";
}

class Enforce : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "enforcement needs root";
    std::string tag = std::to_string(getpid());
    root_ = kCgroup2 / ("apiwarden-enforce-test-" + tag);
    pins_ = "/sys/fs/bpf/apiwarden-enforce-test-" + tag;
    fs::create_directories(root_ / "a");
    fs::create_directories(root_ / "b");
    auto program = EnforceProgram::open({kCgroup2.string(), root_.string(), pins_});
    ASSERT_TRUE(program) << program.error().describe();
    program_ = std::move(*program);
  }

  void TearDown() override {
    program_.reset();
    std::error_code ec;
    fs::remove_all(pins_, ec);  // unpinning the links detaches them
    for (const char* sub : {"a", "b", ""}) fs::remove(root_ / sub, ec);
  }

  // Puts a cut rule on a cgroup and marks its level in the config, as the agent does.
  void cut(const fs::path& cgroup, uint32_t flags, uint32_t rule_id = 1, uint64_t expires_ns = 0) {
    ASSERT_TRUE(program_->resetCounters(rule_id));
    ASSERT_TRUE(program_->putCut(cgroupId(cgroup), {expires_ns, rule_id, flags}));
    auto config = program_->config();
    ASSERT_TRUE(config);
    config->cut_levels |= 1u << cgroupLevel(cgroup);
    ASSERT_TRUE(program_->setConfig(*config));
  }

  std::array<uint64_t, 2> hashKey() {
    auto config = program_->config();
    EXPECT_TRUE(config);
    return config ? std::array<uint64_t, 2>{config->hash_key[0], config->hash_key[1]} : std::array<uint64_t, 2>{};
  }

  // Refuses a token (the last word of a header value) in the kernel; owner: bind it instead.
  void refuse(const std::string& token, uint32_t flags, const fs::path& owner = {}, uint32_t rule_id = 2) {
    uint64_t hash = apiwarden::credentials::tokenHash(hashKey(), token);
    auto config = program_->config();
    ASSERT_TRUE(config);
    apiwarden_cred_rule rule{0, 0, 0, rule_id, flags, 0};
    if (!owner.empty()) {
      rule.owner_cgroup = cgroupId(owner);
      rule.owner_level = static_cast<uint32_t>(cgroupLevel(owner));
    }
    ASSERT_TRUE(program_->resetCounters(rule_id));
    ASSERT_TRUE(program_->putCredential(hash, rule));
    config->cred_rules++;
    config->cred_filter |= 1ULL << (hash & 63);
    ASSERT_TRUE(program_->setConfig(*config));
  }

  apiwarden_rule_counters counters(uint32_t rule_id = 1) {
    auto c = program_->counters(rule_id);
    EXPECT_TRUE(c);
    return c ? *c : apiwarden_rule_counters{};
  }

  fs::path root_;
  std::string pins_;
  std::unique_ptr<EnforceProgram> program_;
};

TEST_F(Enforce, EgressCutRefusesTheWorkloadsConnectsOnly) {
  Listener v4(AF_INET), v6(AF_INET6);
  ASSERT_EQ(connectErrno(root_ / "a", Target::kV4, v4.port), 0) << "before the cut";
  cut(root_ / "a", APIWARDEN_RULE_EGRESS);
  EXPECT_EQ(connectErrno(root_ / "a", Target::kV4, v4.port), EPERM);
  EXPECT_EQ(connectErrno(root_ / "a", Target::kV6, v6.port), EPERM);
  EXPECT_EQ(connectErrno(root_ / "a", Target::kV4MappedOnV6, v4.port), EPERM);
  EXPECT_EQ(connectErrno(root_ / "b", Target::kV4, v4.port), 0) << "the sibling is untouched";
  EXPECT_EQ(connectErrno(root_ / "b", Target::kV6, v6.port), 0);
  EXPECT_EQ(counters().connects, 3u);
  ASSERT_TRUE(program_->deleteCut(cgroupId(root_ / "a")));
  EXPECT_EQ(connectErrno(root_ / "a", Target::kV4, v4.port), 0) << "restored";
}

TEST_F(Enforce, CutOnAParentCgroupCoversItsChildren) {
  Listener v4(AF_INET);
  cut(root_, APIWARDEN_RULE_EGRESS);
  EXPECT_EQ(connectErrno(root_ / "a", Target::kV4, v4.port), EPERM);
  EXPECT_EQ(connectErrno(root_ / "b", Target::kV4, v4.port), EPERM);
}

TEST_F(Enforce, DestinationCutRefusesThatDestinationOnly) {
  Listener blocked(AF_INET), other(AF_INET), v6(AF_INET6);
  cut(root_ / "a", APIWARDEN_RULE_EGRESS | APIWARDEN_RULE_DESTINATIONS);
  apiwarden_dest_key key{32 + 64 + 128, 0, cgroupId(root_ / "a"), {}};
  key.addr[10] = key.addr[11] = 0xff;
  key.addr[12] = 127;
  key.addr[15] = 1;
  ASSERT_TRUE(program_->putDestination(key, {blocked.port, 0, 1}));
  EXPECT_EQ(connectErrno(root_ / "a", Target::kV4, blocked.port), EPERM);
  EXPECT_EQ(connectErrno(root_ / "a", Target::kV4MappedOnV6, blocked.port), EPERM) << "v4-mapped is the same address";
  EXPECT_EQ(connectErrno(root_ / "a", Target::kV4, other.port), 0) << "another port";
  EXPECT_EQ(connectErrno(root_ / "a", Target::kV6, v6.port), 0) << "another address";
  // A /8 for every port.
  key.prefixlen = 32 + 64 + 96 + 8;
  key.addr[15] = 0;
  ASSERT_TRUE(program_->deleteDestination({32 + 64 + 128, 0, cgroupId(root_ / "a"), {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1}}));
  ASSERT_TRUE(program_->putDestination(key, {0, 0, 1}));
  EXPECT_EQ(connectErrno(root_ / "a", Target::kV4, other.port), EPERM);
  EXPECT_EQ(counters().connects, 3u);
}

TEST_F(Enforce, MonitorModeCountsAndLetsThrough) {
  Listener v4(AF_INET);
  cut(root_ / "a", APIWARDEN_RULE_EGRESS | APIWARDEN_RULE_MONITOR);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(connectErrno(root_ / "a", Target::kV4, v4.port), 0);
  EXPECT_EQ(counters().connects, 5u) << "exactly the connects enforce mode would refuse";
  EXPECT_EQ(connectErrno(root_ / "b", Target::kV4, v4.port), 0);
  EXPECT_EQ(counters().connects, 5u);
}

TEST_F(Enforce, ExpiredRuleLetsThroughWithoutTheAgent) {
  Listener v4(AF_INET);
  cut(root_ / "a", APIWARDEN_RULE_EGRESS, 1, bootNs() + 300'000'000ULL);
  program_.reset();  // the agent is gone; the pinned rule still holds
  EXPECT_EQ(connectErrno(root_ / "a", Target::kV4, v4.port), EPERM);
  usleep(400'000);
  EXPECT_EQ(connectErrno(root_ / "a", Target::kV4, v4.port), 0) << "the rule expired by itself";
}

TEST_F(Enforce, TeardownAbortsTheWorkloadsEstablishedConnections) {
  Listener v4(AF_INET);
  HeldConnection a(root_ / "a", v4.port), b(root_ / "b", v4.port);
  ASSERT_TRUE(a.connected());
  ASSERT_TRUE(b.connected());
  cut(root_ / "a", APIWARDEN_RULE_EGRESS);
  ASSERT_TRUE(program_->teardown());
  EXPECT_EQ(a.readResult(), ECONNABORTED);
  EXPECT_EQ(b.readResult(), 0) << "the sibling's connection is untouched";
  EXPECT_EQ(counters().aborted, 1u);
}

TEST_F(Enforce, IngressCutDropsPacketsToTheWorkload) {
  // The server is in cgroup a this time; the client (the test process) is outside the subtree.
  cut(root_ / "a", APIWARDEN_RULE_INGRESS);
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t pid = fork();
  if (pid == 0) {
    std::ofstream(root_ / "a" / "cgroup.procs") << getpid() << std::flush;
    Listener inside(AF_INET);
    (void)!write(ready[1], &inside.port, sizeof(inside.port));
    pollfd p{inside.fd, POLLIN, 0};
    _exit(poll(&p, 1, 700));  // 0: no connection completed
  }
  uint16_t port = 0;
  ASSERT_EQ(read(ready[0], &port, sizeof(port)), static_cast<ssize_t>(sizeof(port)));
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  int status = 0;
  waitpid(pid, &status, 0);
  ::close(fd);
  ::close(ready[0]);
  ::close(ready[1]);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the workload never saw the connection";
  EXPECT_GT(counters().packets, 0u);
}

TEST_F(Enforce, RestartedProgramTakesOverThePinsWithoutAGap) {
  Listener v4(AF_INET);
  cut(root_ / "a", APIWARDEN_RULE_EGRESS);
  size_t pinned = program_->pinnedObjects();
  EXPECT_FALSE(program_->adopted());
  auto second = EnforceProgram::open({kCgroup2.string(), root_.string(), pins_});
  ASSERT_TRUE(second) << second.error().describe();
  EXPECT_TRUE((*second)->adopted());
  EXPECT_EQ((*second)->pinnedObjects(), pinned) << "no second attachment, no new pins";
  program_.reset();
  EXPECT_EQ(connectErrno(root_ / "a", Target::kV4, v4.port), EPERM) << "the rule map was reused";
  EXPECT_EQ(connectErrno(root_ / "b", Target::kV4, v4.port), 0);
  program_ = std::move(*second);
  EXPECT_EQ(counters().connects, 1u);
}

TEST_F(Enforce, MapPinsAnEarlierVersionLeftAreRemoved) {
  size_t pinned = program_->pinnedObjects();
  int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, nullptr, sizeof(uint32_t), 64, 2, nullptr);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  std::string stale = pins_ + "/maps/apiwarden_scan_buffers";  // the scan's buffer until this version
  ASSERT_EQ(bpf_obj_pin(fd, stale.c_str()), 0) << std::strerror(errno);
  ::close(fd);
  auto second = EnforceProgram::open({kCgroup2.string(), root_.string(), pins_});
  ASSERT_TRUE(second) << second.error().describe();
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_EQ((*second)->pinnedObjects(), pinned);
}

TEST_F(Enforce, PinsOfAnotherCgroupAreRefused) {
  auto other = EnforceProgram::open({kCgroup2.string(), (root_ / "b").string(), pins_});
  ASSERT_FALSE(other);
  EXPECT_NE(other.error().message().find("attached to cgroup id"), std::string::npos) << other.error().describe();
}

}  // namespace

namespace {

TEST_F(Enforce, RevokedTokenIsRefusedAtTheSendersWrite) {
  Listener server(AF_INET);
  ASSERT_EQ(requestFrom(root_ / "a", server.port, request("Authorization: Bearer tok-A-123")), 0) << "before";
  refuse("tok-A-123", 0);
  EXPECT_EQ(requestFrom(root_ / "a", server.port, request("Authorization: Bearer tok-A-123")), EACCES);
  EXPECT_EQ(requestFrom(root_ / "b", server.port, request("Authorization: Bearer tok-A-123")), EACCES);
  EXPECT_EQ(requestFrom(root_ / "a", server.port, request("authorization:   bearer   tok-A-123   ")), EACCES)
      << "case, spacing and trailing blanks do not hide it";
  EXPECT_EQ(requestFrom(root_ / "a", server.port, request("Authorization:\tBearer\ttok-A-123")), EACCES) << "tabs";
  EXPECT_EQ(requestFrom(root_ / "a", server.port, request("X-API-Key: tok-A-123")), EACCES) << "any header";
  EXPECT_EQ(requestFrom(root_ / "a", server.port, request("X-API-Key: xtok-A-123")), 0) << "a prefixed one";
  EXPECT_EQ(requestFrom(root_ / "a", server.port, request("Authorization: Bearer tok-B-456")), 0) << "another token";
  EXPECT_EQ(requestFrom(root_ / "a", server.port, request("Authorization: Bearer tok-A-1234")), 0) << "a longer one";
  EXPECT_EQ(counters(2).requests, 5u);
}

TEST_F(Enforce, LongTokensAreMatchedAtEveryAlignment) {
  Listener server(AF_INET);
  std::string token = "eyJhbGciOiJIUzI1NiJ9." + std::string(90, 'x') + ".sig-0123456789";  // a JWT's length class
  refuse(token, 0);
  for (int pad = 0; pad < 8; ++pad) {
    std::string padding = "X-Pad: " + std::string(static_cast<size_t>(pad), 'p');
    EXPECT_EQ(requestFrom(root_ / "a", server.port, request(padding + "\r\nAuthorization: Bearer " + token)), EACCES)
        << "offset " << pad;
    EXPECT_EQ(requestFrom(root_ / "a", server.port, request(padding + "\r\nAuthorization: Bearer " + token + "y")), 0)
        << "offset " << pad;
  }
  EXPECT_EQ(counters(2).requests, 8u);
}

// The kernel hashes a token eight bytes at a time (sixteen inside a long one), the agent in one
// go: every length around those boundaries matches exactly, and one byte more or less does not.
TEST_F(Enforce, TokensOfEveryLengthAreMatchedExactly) {
  std::string alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
  std::vector<size_t> lengths;
  for (size_t n = 1; n <= 48; ++n) lengths.push_back(n);
  for (size_t n : {63u, 64u, 65u, 127u, 128u, 129u, 750u}) lengths.push_back(n);
  for (size_t n : lengths) {
    std::string token;
    for (size_t i = 0; i < n; ++i) token += alphabet[(i * 7 + n) % alphabet.size()];
    refuse(token, 0);
    Listener server(AF_INET);  // never accepts: a listener per token, its backlog is short
    EXPECT_EQ(requestFrom(root_ / "a", server.port, request("Authorization: Bearer " + token)), EACCES) << n;
    EXPECT_EQ(requestFrom(root_ / "a", server.port, request("Authorization: Bearer " + token + "y")), 0) << n;
    if (n > 1) {
      EXPECT_EQ(requestFrom(root_ / "a", server.port, request("Authorization: Bearer " + token.substr(1))), 0) << n;
    }
    ASSERT_TRUE(program_->deleteCredential(apiwarden::credentials::tokenHash(hashKey(), token)));
  }
}

// The scan reads eight bytes at a time; in the last eight bytes of its 8 KiB it reads back from
// the end. A head filling the 8 KiB exactly, or nearly, with the token in its last line.
TEST_F(Enforce, TokenAtTheEndOfAFullScanIsRefused) {
  Listener server(AF_INET);
  refuse("tok-A-123", 0);
  const std::string tail = "\r\nAuthorization: Bearer tok-A-123\r\n\r\n";
  for (size_t total : {8192u, 8191u, 8187u, 8185u}) {
    std::string head = "GET /orders/7 HTTP/1.1\r\nHost: api\r\nX-Pad: ";
    head += std::string(total - head.size() - tail.size(), 'p') + tail;
    ASSERT_EQ(head.size(), total);
    EXPECT_EQ(requestFrom(root_ / "a", server.port, head), EACCES) << total << " bytes";
  }
  EXPECT_EQ(counters(2).requests, 4u);
}

TEST_F(Enforce, RevokeReachesConnectionsOpenedBeforeIt) {
  Listener server(AF_INET);
  int go[2], done[2];
  ASSERT_EQ(pipe(go), 0);
  ASSERT_EQ(pipe(done), 0);
  pid_t pid = fork();
  if (pid == 0) {
    std::ofstream(root_ / "a" / "cgroup.procs") << getpid() << std::flush;
    int fd = connectTo(Target::kV4, server.port);
    std::string ok = request("Authorization: Bearer tok-A-123");
    int first = send(fd, ok.data(), ok.size(), MSG_NOSIGNAL) < 0 ? errno : 0;
    (void)!write(done[1], &first, sizeof(first));
    char c;
    (void)!read(go[0], &c, 1);
    _exit(send(fd, ok.data(), ok.size(), MSG_NOSIGNAL) < 0 ? errno : 0);
  }
  int first = -1;
  ASSERT_EQ(read(done[0], &first, sizeof(first)), static_cast<ssize_t>(sizeof(first)));
  EXPECT_EQ(first, 0);
  refuse("tok-A-123", 0);
  ASSERT_TRUE(program_->joinSockhash());
  (void)!write(go[1], "g", 1);
  int status = 0;
  waitpid(pid, &status, 0);
  for (int fd : {go[0], go[1], done[0], done[1]}) ::close(fd);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), EACCES) << "the keep-alive connection opened before the rule";
}

TEST_F(Enforce, BoundTokenWorksForItsOwnerOnly) {
  Listener server(AF_INET);
  refuse("tok-A-123", APIWARDEN_RULE_BIND, root_ / "a");
  EXPECT_EQ(requestFrom(root_ / "a", server.port, request("Authorization: Bearer tok-A-123")), 0) << "the owner";
  EXPECT_EQ(requestFrom(root_ / "b", server.port, request("Authorization: Bearer tok-A-123")), EACCES) << "a thief";
  EXPECT_EQ(requestFrom(root_ / "b", server.port, request("Authorization: Bearer tok-B-456")), 0);
  EXPECT_EQ(counters(2).requests, 1u);
}

TEST_F(Enforce, MonitoredTokenIsCountedNotRefused) {
  Listener server(AF_INET);
  refuse("tok-A-123", APIWARDEN_RULE_MONITOR);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(requestFrom(root_ / "a", server.port, request("Authorization: Bearer tok-A-123")), 0);
  }
  EXPECT_EQ(requestFrom(root_ / "a", server.port, request("Authorization: Bearer tok-B-456")), 0);
  EXPECT_EQ(counters(2).requests, 3u) << "exactly the writes enforce mode would refuse";
}

}  // namespace

namespace {

// A server in the cgroup accepts one connection and reports how many request bytes it could read
// within 700 ms; the client (this process, outside the enforced subtree) writes the parts given,
// one segment each. Returns {bytes the server read, errno the client's read saw afterwards}.
std::pair<int, int> serveOne(const fs::path& cgroup, const std::vector<std::string>& parts,
                             const std::function<void()>& between = {}) {
  int ready[2], result[2];
  if (pipe(ready) != 0 || pipe(result) != 0) return {-1, -1};
  pid_t pid = fork();
  if (pid == 0) {
    std::ofstream(cgroup / "cgroup.procs") << getpid() << std::flush;
    Listener inside(AF_INET);
    (void)!write(ready[1], &inside.port, sizeof(inside.port));
    int fd = accept(inside.fd, nullptr, nullptr);
    int got = 0;
    char buffer[8192];
    for (pollfd p{fd, POLLIN, 0}; poll(&p, 1, 700) > 0;) {
      ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      got += static_cast<int>(n);
    }
    (void)!write(result[1], &got, sizeof(got));
    pause();
    _exit(0);
  }
  uint16_t port = 0;
  (void)!read(ready[0], &port, sizeof(port));
  int fd = connectTo(Target::kV4, port);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  for (const auto& part : parts) {
    send(fd, part.data(), part.size(), MSG_NOSIGNAL);
    usleep(20'000);
  }
  int got = -1;
  (void)!read(result[0], &got, sizeof(got));
  if (between) between();
  pollfd p{fd, POLLIN, 0};
  int client_error = 0;
  if (poll(&p, 1, 500) > 0) {
    char c;
    if (recv(fd, &c, 1, 0) < 0) client_error = errno;
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  for (int f : {fd, ready[0], ready[1], result[0], result[1]}) ::close(f);
  return {got, client_error};
}

TEST_F(Enforce, RevokedTokenNeverReachesTheServerAndTheConnectionIsReset) {
  refuse("tok-A-123", 0);
  std::string benign = request("Authorization: Bearer tok-B-456");
  EXPECT_EQ(serveOne(root_ / "a", {benign}).first, static_cast<int>(benign.size())) << "other tokens pass";
  auto [got, client_error] = serveOne(root_ / "a", {request("Authorization: Bearer tok-A-123")},
                                      [&] { ASSERT_TRUE(program_->teardown()); });
  EXPECT_EQ(got, 0) << "the server read nothing of the request";
  EXPECT_EQ(client_error, ECONNRESET) << "the agent's teardown resets the connection";
  EXPECT_EQ(counters(2).requests, 1u);
}

TEST_F(Enforce, RevokedTokenSplitAcrossSegmentsIsStillRefused) {
  refuse("tok-A-123", 0);
  std::string whole = request("Authorization: Bearer tok-A-123");
  size_t cut = whole.find("tok-A") + 3;  // in the middle of the token
  EXPECT_EQ(serveOne(root_ / "a", {whole.substr(0, cut), whole.substr(cut)}).first, static_cast<int>(cut))
      << "the first segment arrived, the one completing the header did not";
  EXPECT_EQ(counters(2).requests, 1u);
}

// The receiver keeps a word's hash and its bytes past the last whole eight between segments:
// a long token in pieces of three bytes ends segments at every offset modulo eight; in two pieces
// split after 40 bytes, the second goes on sixteen bytes a round.
TEST_F(Enforce, LongTokenInManySegmentsIsStillRefused) {
  std::string token = "eyJhbGciOiJIUzI1NiJ9." + std::string(60, 'z') + ".sig-0123456789";
  refuse(token, 0);
  std::string whole = request("Authorization: Bearer " + token);
  size_t start = whole.find(token), end = start + token.size();
  std::vector<std::string> parts = {whole.substr(0, start)};
  for (size_t at = start; at < end; at += 3) parts.push_back(whole.substr(at, std::min<size_t>(3, end - at)));
  parts.push_back(whole.substr(end));
  EXPECT_EQ(serveOne(root_ / "a", parts).first, static_cast<int>(end)) << "all but the line's end arrived";
  EXPECT_EQ(serveOne(root_ / "a", {whole.substr(0, start + 40), whole.substr(start + 40)}).first,
            static_cast<int>(start + 40));
  EXPECT_EQ(counters(2).requests, 2u);
}

}  // namespace
