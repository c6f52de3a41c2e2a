// The plaintext of TLS: finds the OpenSSL libraries (libssl) that processes map, and attaches the
// SSL_do_handshake/SSL_write/SSL_read uprobes of bpf/progs/tls.bpf.c to each library file once. A uprobe on a file
// covers every process that maps it, now and later, so only libraries never seen before need work.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "apiwarden/common/result.h"

struct bpf_link;
struct bpf_map;
struct bpf_program;

namespace apiwarden::loader {

// A libssl mapping in /proc/<pid>/maps: the file as the process names it, and its identity.
struct MappedLibrary {
  std::string path;
  uint64_t device = 0;  // makedev(major, minor) of the maps line
  uint64_t inode = 0;
  bool operator==(const MappedLibrary&) const = default;
};

// The distinct libssl files in the text of one /proc/<pid>/maps.
std::vector<MappedLibrary> findSslLibraries(std::string_view maps);

struct TlsPrograms {
  bpf_program* write = nullptr;
  bpf_program* write_ex = nullptr;
  bpf_program* write_ret = nullptr;
  bpf_program* read = nullptr;
  bpf_program* read_ex = nullptr;
  bpf_program* read_ret = nullptr;
  bpf_program* handshake = nullptr;  // SSL_do_handshake: binds a session to its socket
  bpf_program* handshake_ret = nullptr;
  bpf_map* scope = nullptr;  // cgroup array: the monitored subtree
};

class TlsProbes {
 public:
  TlsProbes(const TlsPrograms& programs, std::string proc_root = "/proc");
  ~TlsProbes();
  TlsProbes(const TlsProbes&) = delete;
  TlsProbes& operator=(const TlsProbes&) = delete;

  // Scopes the probes to one cgroup subtree, then attaches to the system's libssl files and those
  // of every running process.
  Result<void> start(int cgroup_fd);
  // Looks at processes started since the last scan (and, every so often, at all of them again, for
  // libraries loaded late with dlopen or pids reused) and attaches to libraries not seen before.
  // Two probes on one file would be harmless (a call is consumed by its first return probe).
  void scan();

  size_t libraries() const { return attached_.size(); }
  uint64_t attachFailures() const { return attach_failures_; }

 private:
  void scanProcess(int pid);
  void attachLibrary(const std::string& path, uint64_t device, uint64_t inode);
  bool attachProbe(bpf_program* program, const std::string& path, const char* symbol, bool retprobe);

  TlsPrograms programs_;
  std::string proc_root_;
  std::set<std::pair<uint64_t, uint64_t>> attached_;  // (device, inode) of libraries with probes
  std::unordered_set<int> seen_;                      // pids whose maps were read
  unsigned scans_ = 0;
  uint64_t attach_failures_ = 0;
  std::vector<bpf_link*> links_;
};

}  // namespace apiwarden::loader
