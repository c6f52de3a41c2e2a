// Owns the capture programs: opens and loads the BPF skeleton, attaches it to one cgroup
// subtree, and detaches everything when destroyed.
#pragma once

#include "agent/loader/tls_probes.h"
#include "apiwarden/abi.h"
#include "apiwarden/common/result.h"

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct apiwarden_bpf;
struct bpf_link;

namespace apiwarden::loader {

struct CaptureOptions {
  std::string cgroup_dir;               // absolute path of the monitored cgroup v2 directory
  uint32_t ringbuf_bytes = 32u << 20;   // power of two, multiple of the page size
  bool tls_plaintext = true;            // OpenSSL uprobes (bpf/progs/tls.bpf.c)
};

using KernelStats = std::array<uint64_t, APIWARDEN_STAT_MAX>;

// Fails with a clear message when the process lacks the privileges or the kernel lacks BTF.
Result<void> checkEnvironment();

// Routes libbpf's own messages through the "libbpf" logger (debug/info/warn levels kept).
void routeLibbpfLogs();
// libbpf's last warnings, one per line, for quoting in a load or attach error.
std::string recentWarnings();

class CaptureProgram {
 public:
  static Result<std::unique_ptr<CaptureProgram>> open(const CaptureOptions& options);
  ~CaptureProgram();
  CaptureProgram(const CaptureProgram&) = delete;
  CaptureProgram& operator=(const CaptureProgram&) = delete;

  int eventsFd() const;
  // Kernel counters, summed over CPUs.
  Result<KernelStats> readStats() const;
  // The TLS plaintext probes, when enabled: scan() them now and then for new libraries.
  TlsProbes* tls() { return tls_.get(); }

 private:
  CaptureProgram() = default;
  Result<void> attach(const std::string& cgroup_dir);

  apiwarden_bpf* skel_ = nullptr;
  int cgroup_fd_ = -1;
  std::vector<bpf_link*> links_;
  std::unique_ptr<TlsProbes> tls_;
};

}  // namespace apiwarden::loader
