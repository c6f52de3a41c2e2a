// The agent's control socket: apiwardenctl sends one JSON request per line, the agent answers one
// JSON object per line. Only root, or members of a configured group, may use it (SO_PEERCRED).
// Runs on the agent's io_context; it owns no threads.
#pragma once

#include "apiwarden/common/result.h"

#include <sys/types.h>

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace apiwarden::control {

// Longest request line accepted, without its newline.
inline constexpr size_t kMaxRequestBytes = 64 * 1024;

struct ControlOptions {
  std::string socket_path = "/run/apiwarden/control.sock";
  std::string group;                               // a group allowed besides root; empty: root only
  std::chrono::milliseconds idle_timeout{30'000};  // a connection with no traffic for this long is closed
  size_t max_connections = 64;                     // more are answered with an error and closed
};

// Who is on the other end of a connection, as the kernel saw it at connect().
struct Peer {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
  std::string user;  // from the user database, or "uid N"
};

// Takes a request object with a string "op"; returns the response object ({"ok":...,...}).
// An exception becomes {"ok":false,"error":"internal error: ..."}.
using Handler = std::function<nlohmann::json(const nlohmann::json& request, const Peer& peer)>;

struct ControlStats {
  uint64_t connections = 0;     // accepted and allowed
  uint64_t refused = 0;         // peers that are neither root nor in the group
  uint64_t over_limit = 0;      // refused because max_connections were open
  uint64_t requests = 0;        // well-formed requests passed to the handler
  uint64_t bad_requests = 0;    // over-long lines, invalid JSON, no "op"
  uint64_t handler_errors = 0;  // exceptions thrown by the handler
  uint64_t idle_closed = 0;     // connections closed by the idle timeout
};

class ControlServer {
 public:
  // Binds and listens on options.socket_path; replaces a stale socket file, but fails if an agent
  // answers on it. Fails if options.group names no group.
  static Result<std::unique_ptr<ControlServer>> open(boost::asio::io_context& io, const ControlOptions& options,
                                                     Handler handler);
  // Stops listening, closes open connections and removes the socket file.
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  const ControlStats& stats() const;
  const std::string& socketPath() const { return path_; }

  // The acceptor, the open connections, the handler and the counters. Pending callbacks hold it,
  // so one that runs after the server is gone finds it stopped instead of a dangling pointer.
  struct State;

 private:
  ControlServer(std::string path, std::shared_ptr<State> state) : path_(std::move(path)), state_(std::move(state)) {}

  std::string path_;
  std::shared_ptr<State> state_;
  dev_t dev_ = 0;  // the socket file we created, so the destructor removes only that one
  ino_t ino_ = 0;
};

}  // namespace apiwarden::control
