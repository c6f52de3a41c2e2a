// The control socket over real Unix sockets in a temporary directory: the line protocol, hostile
// input, the peer check (forked children that drop to another uid), socket file handling; and the
// DURATION parser apiwardenctl uses.
#include "agent/control/control_server.h"
#include "agent/control/duration.h"

#include <grp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

namespace apiwarden::control {
namespace {

using nlohmann::json;

// Echoes the request back, or throws when asked to.
json echo(const json& request, const Peer& peer) {
  if (request["op"] == "throw") throw std::runtime_error("boom");
  return {{"ok", true}, {"op", request["op"]}, {"uid", peer.uid}, {"user", peer.user}};
}

int connectTo(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  path.copy(address.sun_path, path.size());
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return -1;
  }
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  return fd;
}

// A blocking client with a 5 s read timeout.
class Client {
 public:
  explicit Client(const std::string& path) : fd_(connectTo(path)) {}
  ~Client() {
    if (fd_ >= 0) close(fd_);
  }
  bool connected() const { return fd_ >= 0; }

  void send(const std::string& bytes) {
    for (size_t sent = 0; sent < bytes.size();) {
      ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      ASSERT_GT(n, 0) << std::strerror(errno);
      sent += static_cast<size_t>(n);
    }
  }

  // The next line, or "" on EOF or timeout.
  std::string readLine() {
    while (buffer_.find('\n') == std::string::npos) {
      char chunk[4096];
      ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
      if (n <= 0) return "";
      buffer_.append(chunk, static_cast<size_t>(n));
    }
    std::string line = buffer_.substr(0, buffer_.find('\n'));
    buffer_.erase(0, line.size() + 1);
    return line;
  }

  json ask(const std::string& line) {
    send(line + "\n");
    return json::parse(readLine(), nullptr, false);
  }

 private:
  int fd_;
  std::string buffer_;
};

class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/apiwarden-control-XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    chmod(dir_.c_str(), 0755);                          // children that drop to another uid reach the socket
    options_.socket_path = dir_ + "/run/control.sock";  // run/ does not exist yet
  }

  void TearDown() override {
    stop();
    std::filesystem::remove_all(dir_);
  }

  void start(Handler handler = echo) {
    auto opened = ControlServer::open(io_, options_, std::move(handler));
    ASSERT_TRUE(opened) << opened.error().describe();
    server_ = std::move(*opened);
    thread_ = std::thread([this] { io_.run(); });
  }

  void stop() {
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
    server_.reset();
  }

  std::string dir_;
  ControlOptions options_;
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{io_.get_executor()};
  std::unique_ptr<ControlServer> server_;
  std::thread thread_;
};

// Forks a child that drops to uid/gid, connects, sends one request and reports the first answer
// line through a pipe (the socket's file mode is the parent's business).
std::string askAs(const std::string& path, uid_t uid, gid_t gid) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return "pipe failed";
  pid_t child = fork();
  if (child == 0) {
    close(pipe_fds[0]);
    if (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(uid) != 0) _exit(3);
    int fd = connectTo(path);
    if (fd < 0) _exit(4);
    const char request[] = "{\"op\":\"status\"}\n";
    send(fd, request, sizeof(request) - 1, MSG_NOSIGNAL);  // a refused peer may be closed on already
    char answer[512];
    ssize_t n = read(fd, answer, sizeof(answer));
    if (n > 0 && write(pipe_fds[1], answer, static_cast<size_t>(n)) < 0) _exit(6);
    _exit(0);
  }
  close(pipe_fds[1]);
  std::string answer;
  char chunk[512];
  for (ssize_t n; (n = read(pipe_fds[0], chunk, sizeof(chunk))) > 0;) answer.append(chunk, static_cast<size_t>(n));
  close(pipe_fds[0]);
  int status = 0;
  waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return "child failed: " + std::to_string(status);
  return answer;
}

TEST_F(ControlServerTest, SeveralRequestsOnOneConnection) {
  start();
  Client client(options_.socket_path);
  ASSERT_TRUE(client.connected());
  for (const char* op : {"list", "status", "cut"}) {
    json answer = client.ask(json{{"op", op}, {"workload", "cgroup:/x"}}.dump());
    EXPECT_EQ(answer["ok"], true);
    EXPECT_EQ(answer["op"], op);
    EXPECT_EQ(answer["uid"], getuid());
  }
  // Two requests in one write are answered in order; CRLF and blank lines are tolerated.
  client.send("{\"op\":\"a\"}\r\n\n{\"op\":\"b\"}\n");
  EXPECT_EQ(json::parse(client.readLine())["op"], "a");
  EXPECT_EQ(json::parse(client.readLine())["op"], "b");
  EXPECT_EQ(server_->stats().requests, 5u);
}

TEST_F(ControlServerTest, MalformedRequestsGetErrorsAndTheConnectionGoesOn) {
  start();
  Client client(options_.socket_path);
  json answer = client.ask("{\"op\":");
  EXPECT_EQ(answer["ok"], false);
  EXPECT_EQ(answer["error"].get<std::string>().rfind("invalid JSON: parse error", 0), 0u) << answer;
  EXPECT_EQ(client.ask("[1,2]")["error"], "a request must be a JSON object");
  EXPECT_EQ(client.ask("{\"workload\":\"x\"}")["error"], "a request needs a string \"op\"");
  EXPECT_EQ(client.ask("{\"op\":7}")["error"], "a request needs a string \"op\"");
  EXPECT_EQ(client.ask("{\"op\":\"list\"}")["ok"], true);
  EXPECT_EQ(server_->stats().bad_requests, 4u);
}

TEST_F(ControlServerTest, OversizedLineIsRefusedAndSkipped) {
  start();
  Client client(options_.socket_path);
  std::string huge = "{\"op\":\"list\",\"pad\":\"" + std::string(200 * 1024, 'x') + "\"}";
  json answer = client.ask(huge);
  EXPECT_EQ(answer["error"], "request line longer than 65536 bytes");
  // The rest of the long line is dropped, and the next line is read as a request.
  EXPECT_EQ(client.ask("{\"op\":\"status\"}")["op"], "status");
  Client other(options_.socket_path);
  EXPECT_EQ(other.ask("{\"op\":\"list\"}")["ok"], true);
}

TEST_F(ControlServerTest, HandlerExceptionIsAnInternalError) {
  start();
  Client client(options_.socket_path);
  json answer = client.ask("{\"op\":\"throw\"}");
  EXPECT_EQ(answer, json({{"ok", false}, {"error", "internal error: boom"}}));
  EXPECT_EQ(client.ask("{\"op\":\"list\"}")["ok"], true);
  EXPECT_EQ(server_->stats().handler_errors, 1u);
}

TEST_F(ControlServerTest, SilentClientDoesNotBlockOthersAndIsClosedWhenIdle) {
  options_.idle_timeout = std::chrono::milliseconds(300);
  start();
  Client silent(options_.socket_path);
  Client busy(options_.socket_path);
  EXPECT_EQ(busy.ask("{\"op\":\"list\"}")["ok"], true);
  EXPECT_EQ(silent.readLine(), "");  // EOF once the idle timeout closes it
  EXPECT_GE(server_->stats().idle_closed, 1u);
}

TEST_F(ControlServerTest, SocketFileModeParentDirectoryAndRemoval) {
  start();
  struct stat st {};
  ASSERT_EQ(stat(options_.socket_path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat((dir_ + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  stop();
  EXPECT_FALSE(std::filesystem::exists(options_.socket_path));
}

TEST_F(ControlServerTest, DestroyingTheServerClosesConnections) {
  start();
  Client client(options_.socket_path);
  EXPECT_EQ(client.ask("{\"op\":\"list\"}")["ok"], true);
  std::promise<void> destroyed;
  boost::asio::post(io_, [&] {  // on the io thread, with the connection's read pending
    server_.reset();
    destroyed.set_value();
  });
  destroyed.get_future().wait();
  EXPECT_EQ(client.readLine(), "");
  EXPECT_FALSE(std::filesystem::exists(options_.socket_path));
}

TEST_F(ControlServerTest, StaleSocketIsReplacedButALiveOneIsNot) {
  std::filesystem::create_directories(dir_ + "/run");
  {  // a socket file left by a killed agent: bound, never unlinked, nobody listening
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    options_.socket_path.copy(address.sun_path, options_.socket_path.size());
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    close(fd);
  }
  start();
  EXPECT_EQ(Client(options_.socket_path).ask("{\"op\":\"list\"}")["ok"], true);

  boost::asio::io_context other_io;
  auto second = ControlServer::open(other_io, options_, echo);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), EADDRINUSE);
  EXPECT_NE(second.error().message().find("another agent is already listening"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(options_.socket_path));  // the live agent's socket is left alone
}

TEST_F(ControlServerTest, RefusesToReplaceAFileThatIsNotASocket) {
  std::filesystem::create_directories(dir_ + "/run");
  { std::ofstream(options_.socket_path) << "not a socket"; }
  auto opened = ControlServer::open(io_, options_, echo);
  ASSERT_FALSE(opened);
  EXPECT_NE(opened.error().message().find("is not a socket"), std::string::npos);
}

TEST_F(ControlServerTest, UnknownGroupIsAnErrorAtOpen) {
  options_.group = "apiwarden-no-such-group";
  auto opened = ControlServer::open(io_, options_, echo);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().message(), "control group \"apiwarden-no-such-group\" does not exist");
}

TEST_F(ControlServerTest, NonRootPeerIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run a child as another uid";
  start();
  chmod(options_.socket_path.c_str(), 0666);  // as if the file mode were wrong: the peer check still holds
  std::string answer = askAs(options_.socket_path, 65534, 65534);
  EXPECT_EQ(answer, "{\"error\":\"permission denied: uid 65534 is not root\",\"ok\":false}\n");
  EXPECT_EQ(server_->stats().refused, 1u);
  EXPECT_EQ(Client(options_.socket_path).ask("{\"op\":\"list\"}")["ok"], true);  // root still served
}

TEST_F(ControlServerTest, GroupMembersAreAllowedAndOthersRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run a child as another uid";
  group* nogroup = getgrnam("nogroup");
  if (!nogroup) GTEST_SKIP() << "no group named nogroup";
  gid_t gid = nogroup->gr_gid;
  options_.group = "nogroup";
  start();
  struct stat st {};
  ASSERT_EQ(stat(options_.socket_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  EXPECT_EQ(st.st_gid, gid);

  std::string allowed = askAs(options_.socket_path, 65534, gid);
  EXPECT_EQ(json::parse(allowed, nullptr, false)["ok"], true) << allowed;

  chmod(options_.socket_path.c_str(), 0666);  // let any uid reach the peer check
  // The process's gid is daemon, but the user database puts nobody in nogroup.
  std::string by_user = askAs(options_.socket_path, 65534, 1);
  EXPECT_EQ(json::parse(by_user, nullptr, false)["ok"], true) << by_user;

  std::string refused = askAs(options_.socket_path, 1, 1);  // daemon: not in nogroup
  EXPECT_EQ(refused, "{\"error\":\"permission denied: uid 1 is not root and not in group nogroup\",\"ok\":false}\n");
}

TEST(Duration, AcceptsUnitsAndPlainSeconds) {
  EXPECT_EQ(parseDuration("90s"), 90);
  EXPECT_EQ(parseDuration("15m"), 900);
  EXPECT_EQ(parseDuration("2h"), 7200);
  EXPECT_EQ(parseDuration("1d"), 86400);
  EXPECT_EQ(parseDuration("45"), 45);
  EXPECT_EQ(parseDuration("3650d"), kMaxDurationS);
}

TEST(Duration, RejectsEverythingElse) {
  for (const char* bad :
       {"", "s", "1.5h", "10x", "1w", "-5m", "0", "0s", " 5", "5 m", "+5", "3651d", "99999999999999999999s", "2h30m"}) {
    auto parsed = parseDuration(bad);
    EXPECT_FALSE(parsed) << bad;
    if (!parsed) {
      EXPECT_EQ(parsed.error().message().rfind("invalid duration \"" + std::string(bad) + "\": ", 0), 0u);
    }
  }
}

}  // namespace
}  // namespace apiwarden::control
