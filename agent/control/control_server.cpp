#include "agent/control/control_server.h"

#include "apiwarden/common/log.h"

#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <filesystem>
#include <unordered_set>
#include <vector>

namespace apiwarden::control {

namespace asio = boost::asio;
using asio::local::stream_protocol;

class Connection;

struct ControlServer::State : std::enable_shared_from_this<ControlServer::State> {
  State(asio::io_context& io, Handler h) : acceptor(io), retry_timer(io), handler(std::move(h)) {}

  void accept();
  void admit(stream_protocol::socket socket);

  stream_protocol::acceptor acceptor;
  asio::steady_timer retry_timer;  // re-arms accept after an error such as EMFILE
  Handler handler;
  ControlOptions options;
  std::optional<gid_t> group_gid;
  std::unordered_set<Connection*> connections;
  ControlStats stats;
  bool stopped = false;
  std::chrono::steady_clock::time_point last_refusal_log{};
  uint64_t refusals_not_logged = 0;
};

namespace {

using State = ControlServer::State;
using Clock = std::chrono::steady_clock;

// One line of {"ok":false,"error":...}.
std::string errorLine(const std::string& message) {
  return nlohmann::json{{"ok", false}, {"error", message}}.dump(-1, ' ', false,
                                                                nlohmann::json::error_handler_t::replace) +
         "\n";
}

std::optional<passwd> lookUser(uid_t uid, std::vector<char>& buffer) {
  passwd entry{};
  passwd* found = nullptr;
  buffer.resize(16384);
  while (getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) == ERANGE && buffer.size() < (1u << 20)) {
    buffer.resize(buffer.size() * 2);
  }
  if (!found) return std::nullopt;
  return entry;
}

std::string userName(uid_t uid) {
  std::vector<char> buffer;
  if (auto user = lookUser(uid, buffer)) return user->pw_name;
  return "uid " + std::to_string(uid);
}

Result<gid_t> groupId(const std::string& name) {
  group entry{};
  group* found = nullptr;
  std::vector<char> buffer(16384);
  int rc;
  while ((rc = getgrnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found)) == ERANGE &&
         buffer.size() < (1u << 20)) {
    buffer.resize(buffer.size() * 2);
  }
  if (!found) return fail(rc, "control group \"" + name + "\" does not exist");
  return entry.gr_gid;
}

// Whether the user's group list (primary and supplementary, from the group database) holds gid.
bool userInGroup(uid_t uid, gid_t gid) {
  std::vector<char> buffer;
  auto user = lookUser(uid, buffer);
  if (!user) return false;
  std::vector<gid_t> groups(64);
  int count = static_cast<int>(groups.size());
  while (getgrouplist(user->pw_name, user->pw_gid, groups.data(), &count) < 0 && count > 0 && count < 65536) {
    groups.resize(static_cast<size_t>(count));
  }
  groups.resize(static_cast<size_t>(std::max(count, 0)));
  return std::find(groups.begin(), groups.end(), gid) != groups.end();
}

Result<Peer> peerOf(int fd) {
  ucred cred{};
  socklen_t length = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) return fail(errno, "SO_PEERCRED");
  return Peer{cred.uid, cred.gid, cred.pid, userName(cred.uid)};
}

bool allowed(const Peer& peer, std::optional<gid_t> group_gid) {
  if (peer.uid == 0) return true;
  if (!group_gid) return false;
  return peer.gid == *group_gid || userInGroup(peer.uid, *group_gid);
}

// Makes the parent directory, and removes a socket file no agent answers on any more.
Result<void> preparePath(const std::string& path) {
  if (path.empty() || path.size() >= sizeof(sockaddr_un::sun_path)) {
    return fail(ENAMETOOLONG, "control socket path \"" + path + "\" is empty or longer than " +
                                  std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes");
  }
  auto parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::exists(parent, ec)) {
    std::filesystem::create_directories(parent, ec);
    if (!ec) std::filesystem::permissions(parent, std::filesystem::perms(0755), ec);
    if (ec) return fail(ec.value(), "creating " + parent.string());
  }
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return fail(errno, "stat " + path);
  }
  if (!S_ISSOCK(st.st_mode)) return fail(EEXIST, path + " exists and is not a socket; not removing it");

  int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (probe < 0) return fail(errno, "socket");
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  path.copy(address.sun_path, path.size());
  int rc = connect(probe, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  int error = errno;
  close(probe);
  if (rc == 0 || error == EAGAIN) {
    return fail(EADDRINUSE, "another agent is already listening on " + path);
  }
  if (error != ECONNREFUSED) return fail(error, "probing the existing socket " + path);
  if (unlink(path.c_str()) != 0 && errno != ENOENT) return fail(errno, "removing the stale socket " + path);
  logger("control")->info("removed a stale control socket {}", path);
  return {};
}

}  // namespace

// Reads request lines, answers each one before reading the next (so a client that does not read
// its answers stops being read), and closes after options.idle_timeout without traffic.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<State> state, stream_protocol::socket socket, Peer peer)
      : state_(std::move(state)), socket_(std::move(socket)), idle_(socket_.get_executor()), peer_(std::move(peer)) {
    state_->connections.insert(this);
  }
  ~Connection() { state_->connections.erase(this); }

  void serve() { process(); }

  // Writes one error line, then closes.
  void refuse(const std::string& message) { send(errorLine(message), /*then_close=*/true); }

  void close() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ignored;
    socket_.shutdown(stream_protocol::socket::shutdown_both, ignored);
    socket_.close(ignored);
    idle_.cancel();
  }

 private:
  // Answers the next complete line in buffer_, or reads more.
  void process() {
    while (true) {
      size_t newline = buffer_.find('\n');
      if (discarding_) {  // the rest of a line already answered as too long
        if (newline == std::string::npos) {
          buffer_.clear();
          break;
        }
        buffer_.erase(0, newline + 1);
        discarding_ = false;
        continue;
      }
      if (newline == std::string::npos && buffer_.size() <= kMaxRequestBytes) break;
      if (newline == std::string::npos || newline > kMaxRequestBytes) {
        discarding_ = newline == std::string::npos;
        buffer_.erase(0, discarding_ ? buffer_.size() : newline + 1);
        ++state_->stats.bad_requests;
        return send(errorLine("request line longer than " + std::to_string(kMaxRequestBytes) + " bytes"), false);
      }
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      return send(answer(line), false);
    }
    read();
  }

  std::string answer(const std::string& line) {
    nlohmann::json request;
    try {
      request = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      ++state_->stats.bad_requests;
      std::string what = e.what();  // "[json.exception.parse_error.101] parse error at ..."
      if (auto bracket = what.find("] "); bracket != std::string::npos) what.erase(0, bracket + 2);
      return errorLine("invalid JSON: " + what);
    }
    if (!request.is_object()) {
      ++state_->stats.bad_requests;
      return errorLine("a request must be a JSON object");
    }
    auto op = request.find("op");
    if (op == request.end() || !op->is_string()) {
      ++state_->stats.bad_requests;
      return errorLine("a request needs a string \"op\"");
    }
    ++state_->stats.requests;
    logger("control")->debug("{} (uid {}, pid {}): {}", peer_.user, peer_.uid, peer_.pid, op->get<std::string>());
    try {
      nlohmann::json response = state_->handler(request, peer_);
      if (!response.is_object()) throw std::runtime_error("the handler answered with no JSON object");
      return response.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    } catch (const std::exception& e) {
      ++state_->stats.handler_errors;
      logger("control")->warn("op {} from {}: {}", op->get<std::string>(), peer_.user, e.what());
      return errorLine(std::string("internal error: ") + e.what());
    } catch (...) {
      ++state_->stats.handler_errors;
      return errorLine("internal error: unknown exception");
    }
  }

  void read() {
    armIdleTimer();
    socket_.async_read_some(asio::buffer(chunk_), [self = shared_from_this()](boost::system::error_code ec, size_t n) {
      if (self->closed_ || self->state_->stopped) return;
      if (ec) return self->close();  // EOF or reset: the client is gone
      self->buffer_.append(self->chunk_.data(), n);
      self->process();
    });
  }

  void send(std::string line, bool then_close) {
    armIdleTimer();
    out_ = std::move(line);
    asio::async_write(socket_, asio::buffer(out_),
                      [self = shared_from_this(), then_close](boost::system::error_code ec, size_t) {
                        if (self->closed_ || self->state_->stopped) return;
                        if (ec || then_close) return self->close();
                        self->process();
                      });
  }

  void armIdleTimer() {
    idle_.expires_after(state_->options.idle_timeout);
    idle_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec || self->closed_ || self->idle_.expiry() > Clock::now()) return;  // re-armed or cancelled
      ++self->state_->stats.idle_closed;
      logger("control")->debug("closing an idle connection from {}", self->peer_.user);
      self->close();
    });
  }

  std::shared_ptr<State> state_;
  stream_protocol::socket socket_;
  asio::steady_timer idle_;
  Peer peer_;
  std::array<char, 4096> chunk_{};
  std::string buffer_;       // received bytes not yet answered; at most kMaxRequestBytes + a chunk
  bool discarding_ = false;  // inside a line already answered as too long: drop up to its newline
  std::string out_;          // the answer being written
  bool closed_ = false;
};

void State::accept() {
  acceptor.async_accept([self = shared_from_this()](boost::system::error_code ec, stream_protocol::socket socket) {
    if (self->stopped) return;
    if (!ec) {
      self->admit(std::move(socket));
      return self->accept();
    }
    // Out of descriptors and the like: try again shortly rather than spinning or giving up.
    logger("control")->warn("accepting a control connection: {}", ec.message());
    self->retry_timer.expires_after(std::chrono::milliseconds(200));
    self->retry_timer.async_wait([self](boost::system::error_code wait_ec) {
      if (!wait_ec && !self->stopped) self->accept();
    });
  });
}

void State::admit(stream_protocol::socket socket) {
  auto log = logger("control");
  auto peer = peerOf(socket.native_handle());
  if (!peer) {
    log->warn("control connection: {}", peer.error().describe());
    return;  // the socket closes as it goes out of scope
  }
  auto connection = std::make_shared<Connection>(shared_from_this(), std::move(socket), *peer);
  if (!allowed(*peer, group_gid)) {
    ++stats.refused;
    std::string message = "permission denied: uid " + std::to_string(peer->uid) + " is not root";
    if (group_gid) message += " and not in group " + options.group;
    auto now = Clock::now();
    if (now - last_refusal_log >= std::chrono::seconds(10)) {
      std::string unreported = refusals_not_logged == 0 ? "" : fmt::format(" ({} more since)", refusals_not_logged);
      log->warn("refused a control connection from {} (uid {}, gid {}, pid {}){}", peer->user, peer->uid, peer->gid,
                peer->pid, unreported);
      last_refusal_log = now;
      refusals_not_logged = 0;
    } else {
      ++refusals_not_logged;
    }
    return connection->refuse(message);
  }
  if (connections.size() > options.max_connections) {  // this one is already counted in connections
    ++stats.over_limit;
    log->warn("refused a control connection from {}: {} connections open", peer->user, options.max_connections);
    return connection->refuse("too many control connections (" + std::to_string(options.max_connections) + ")");
  }
  ++stats.connections;
  log->debug("control connection from {} (uid {}, pid {})", peer->user, peer->uid, peer->pid);
  connection->serve();
}

Result<std::unique_ptr<ControlServer>> ControlServer::open(asio::io_context& io, const ControlOptions& options,
                                                           Handler handler) {
  auto state = std::make_shared<State>(io, std::move(handler));
  state->options = options;
  if (!options.group.empty()) {
    auto gid = groupId(options.group);
    if (!gid) return std::unexpected(gid.error());
    state->group_gid = *gid;
  }
  const std::string& path = options.socket_path;
  if (auto prepared = preparePath(path); !prepared) return std::unexpected(prepared.error());

  // The file is created by bind(): a umask makes it 0600 from the start, not after a chmod.
  boost::system::error_code ec;
  mode_t previous_umask = umask(0177);
  state->acceptor.open(stream_protocol(), ec);
  if (!ec) state->acceptor.bind(stream_protocol::endpoint(path), ec);
  umask(previous_umask);
  if (ec) return fail(ec.value(), "binding " + path);
  state->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    unlink(path.c_str());
    return fail(ec.value(), "listening on " + path);
  }

  std::unique_ptr<ControlServer> server(new ControlServer(path, state));  // from here on, ~ControlServer unlinks
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return fail(errno, "stat " + path);
  server->dev_ = st.st_dev;
  server->ino_ = st.st_ino;
  if (state->group_gid) {
    if (chown(path.c_str(), static_cast<uid_t>(-1), *state->group_gid) != 0) {
      return fail(errno, "giving " + path + " to group " + options.group);
    }
    if (chmod(path.c_str(), 0660) != 0) return fail(errno, "chmod 0660 " + path);
  }
  state->accept();
  logger("control")->info("control socket {} (root{}{})", path, options.group.empty() ? "" : " and group ",
                          options.group);
  return server;
}

ControlServer::~ControlServer() {
  state_->stopped = true;
  boost::system::error_code ignored;
  state_->acceptor.close(ignored);
  state_->retry_timer.cancel();
  // close() does not remove from the set; connections leave it when their last callback drops them.
  for (Connection* connection : std::vector<Connection*>(state_->connections.begin(), state_->connections.end())) {
    connection->close();
  }
  struct stat st {};
  if (lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) unlink(path_.c_str());
}

const ControlStats& ControlServer::stats() const { return state_->stats; }

}  // namespace apiwarden::control
