#include "agent/loader/capture_program.h"

#include "apiwarden/common/log.h"
#include "apiwarden_bpf.skel.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdarg>
#include <deque>
#include <fstream>
#include <mutex>
#include <string>

namespace apiwarden::loader {
namespace {

// The last libbpf warnings, quoted in a load error so the user sees which hook failed and why.
std::mutex g_recent_mutex;
std::deque<std::string> g_recent_warnings;
constexpr size_t kRecentWarnings = 12;

int libbpfPrint(libbpf_print_level level, const char* format, va_list args) {
  char buffer[1024];
  int n = vsnprintf(buffer, sizeof(buffer), format, args);
  if (n <= 0) return 0;
  std::string line(buffer, std::min<size_t>(static_cast<size_t>(n), sizeof(buffer) - 1));
  while (!line.empty() && line.back() == '\n') line.pop_back();
  static auto log = logger("libbpf");
  switch (level) {
    case LIBBPF_WARN: {
      log->warn("{}", line);
      std::lock_guard lock(g_recent_mutex);
      g_recent_warnings.push_back(line);
      if (g_recent_warnings.size() > kRecentWarnings) g_recent_warnings.pop_front();
      break;
    }
    case LIBBPF_INFO: log->info("{}", line); break;
    case LIBBPF_DEBUG: log->debug("{}", line); break;
  }
  return 0;
}

// Effective capability bits from /proc/self/status.
uint64_t effectiveCapabilities() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("CapEff:", 0) == 0) return std::stoull(line.substr(7), nullptr, 16);
  }
  return 0;
}

constexpr int kCapNetAdmin = 12;
constexpr int kCapSysAdmin = 21;
constexpr int kCapPerfmon = 38;
constexpr int kCapBpf = 39;

}  // namespace

void routeLibbpfLogs() { libbpf_set_print(libbpfPrint); }

std::string recentWarnings() {
  std::lock_guard lock(g_recent_mutex);
  std::string out;
  for (const auto& line : g_recent_warnings) out += "\n    libbpf: " + line;
  return out;
}

Result<void> checkEnvironment() {
  uint64_t caps = effectiveCapabilities();
  auto has = [caps](int cap) { return (caps >> cap) & 1; };
  bool privileged = has(kCapSysAdmin) || (has(kCapBpf) && has(kCapNetAdmin) && has(kCapPerfmon));
  if (!privileged) {
    return fail(EPERM, "apiwarden-agent needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON (CapEff=" +
                           std::to_string(caps) + "); run it with sudo");
  }
  struct stat st {};
  if (stat("/sys/kernel/btf/vmlinux", &st) != 0) {
    return fail(errno, "kernel BTF is missing (/sys/kernel/btf/vmlinux): apiwarden needs a kernel built "
                       "with CONFIG_DEBUG_INFO_BTF=y");
  }
  return {};
}

Result<std::unique_ptr<CaptureProgram>> CaptureProgram::open(const CaptureOptions& options) {
  std::unique_ptr<CaptureProgram> program(new CaptureProgram());
  program->skel_ = apiwarden_bpf__open();
  if (!program->skel_) return fail(errno, "opening the BPF object");

  if (bpf_map__set_max_entries(program->skel_->maps.apiwarden_events, options.ringbuf_bytes) != 0) {
    return fail(errno, "sizing the ring buffer to " + std::to_string(options.ringbuf_bytes) + " bytes");
  }
  auto& progs = program->skel_->progs;
  TlsPrograms tls{progs.apiwarden_ssl_write, progs.apiwarden_ssl_write_ex, progs.apiwarden_ssl_write_ret,
                  progs.apiwarden_ssl_read,  progs.apiwarden_ssl_read_ex,  progs.apiwarden_ssl_read_ret,
                  progs.apiwarden_ssl_do_handshake, progs.apiwarden_ssl_do_handshake_ret,
                  program->skel_->maps.apiwarden_scope};
  if (!options.tls_plaintext) {
    for (bpf_program* prog : {tls.write, tls.write_ex, tls.write_ret, tls.read, tls.read_ex, tls.read_ret,
                              tls.handshake, tls.handshake_ret}) {
      bpf_program__set_autoload(prog, false);
    }
  }
  if (apiwarden_bpf__load(program->skel_) != 0) {
    int err = errno;
    return fail(err, "loading the BPF programs into the kernel; libbpf said:" + recentWarnings());
  }
  if (auto attached = program->attach(options.cgroup_dir); !attached) return std::unexpected(attached.error());
  if (options.tls_plaintext) {
    program->tls_ = std::make_unique<TlsProbes>(tls);
    if (auto started = program->tls_->start(program->cgroup_fd_); !started) return std::unexpected(started.error());
  }
  return program;
}

Result<void> CaptureProgram::attach(const std::string& cgroup_dir) {
  cgroup_fd_ = ::open(cgroup_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cgroup_fd_ < 0) return fail(errno, "opening cgroup " + cgroup_dir);

  bpf_program* programs[] = {skel_->progs.apiwarden_capture_egress, skel_->progs.apiwarden_capture_ingress,
                             skel_->progs.apiwarden_sockops};
  for (bpf_program* prog : programs) {
    bpf_link* link = bpf_program__attach_cgroup(prog, cgroup_fd_);
    if (!link) {
      int err = errno;
      return fail(err, std::string("attaching ") + bpf_program__name(prog) + " to cgroup " + cgroup_dir +
                           recentWarnings());
    }
    links_.push_back(link);
  }
  logger("loader")->info("attached {} programs to cgroup {}", links_.size(), cgroup_dir);
  return {};
}

CaptureProgram::~CaptureProgram() {
  tls_.reset();
  for (bpf_link* link : links_) bpf_link__destroy(link);
  if (cgroup_fd_ >= 0) ::close(cgroup_fd_);
  if (skel_) apiwarden_bpf__destroy(skel_);
}

int CaptureProgram::eventsFd() const { return bpf_map__fd(skel_->maps.apiwarden_events); }

Result<KernelStats> CaptureProgram::readStats() const {
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return fail(-cpus, "counting possible CPUs");
  std::vector<uint64_t> values(static_cast<size_t>(cpus));
  KernelStats totals{};
  int fd = bpf_map__fd(skel_->maps.apiwarden_stats);
  for (uint32_t key = 0; key < APIWARDEN_STAT_MAX; ++key) {
    if (bpf_map_lookup_elem(fd, &key, values.data()) != 0) return fail(errno, "reading kernel counters");
    for (uint64_t v : values) totals[key] += v;
  }
  return totals;
}

}  // namespace apiwarden::loader
