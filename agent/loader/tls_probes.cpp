#include "agent/loader/tls_probes.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <charconv>
#include <fstream>
#include <sstream>

#include "apiwarden/common/log.h"

namespace apiwarden::loader {
namespace {

// Every this many scans, all processes are looked at again, not only new ones.
constexpr unsigned kFullScanEvery = 30;

// Where distributions keep the system's libssl, attached at start so that a process that
// loads it right after the agent starts is covered before any scan could see it.
constexpr const char* kSystemLibraryDirs[] = {
    "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib64", "/lib"};

bool isSslLibraryName(std::string_view path) {
  size_t slash = path.rfind('/');
  std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
  return name.starts_with("libssl.so");
}

// The next whitespace-separated field of a maps line, advancing past it.
std::string_view nextField(std::string_view& line) {
  size_t start = line.find_first_not_of(' ');
  if (start == std::string_view::npos) {
    line = {};
    return {};
  }
  line.remove_prefix(start);
  size_t end = line.find(' ');
  std::string_view field = line.substr(0, end);
  line.remove_prefix(end == std::string_view::npos ? line.size() : end);
  return field;
}

template <typename T>
bool parseNumber(std::string_view text, T& value, int base) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, base);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace

std::vector<MappedLibrary> findSslLibraries(std::string_view maps) {
  std::vector<MappedLibrary> found;
  while (!maps.empty()) {
    size_t eol = maps.find('\n');
    std::string_view line = maps.substr(0, eol);
    maps.remove_prefix(eol == std::string_view::npos ? maps.size() : eol + 1);

    nextField(line);  // address range
    nextField(line);  // permissions
    nextField(line);  // offset
    std::string_view device = nextField(line), inode_text = nextField(line);
    size_t path_start = line.find_first_not_of(' ');
    if (path_start == std::string_view::npos) continue;
    std::string_view path = line.substr(path_start);
    if (!path.starts_with('/') || !isSslLibraryName(path) || path.ends_with(" (deleted)")) continue;

    size_t colon = device.find(':');
    unsigned major = 0, minor = 0;
    MappedLibrary library{std::string(path), 0, 0};
    if (colon == std::string_view::npos || !parseNumber(device.substr(0, colon), major, 16) ||
        !parseNumber(device.substr(colon + 1), minor, 16) || !parseNumber(inode_text, library.inode, 10)) {
      continue;
    }
    library.device = makedev(major, minor);
    bool duplicate = false;
    for (const MappedLibrary& seen : found) duplicate |= seen.device == library.device && seen.inode == library.inode;
    if (!duplicate) found.push_back(std::move(library));
  }
  return found;
}

TlsProbes::TlsProbes(const TlsPrograms& programs, std::string proc_root)
    : programs_(programs), proc_root_(std::move(proc_root)) {}

TlsProbes::~TlsProbes() {
  for (bpf_link* link : links_) bpf_link__destroy(link);
}

Result<void> TlsProbes::start(int cgroup_fd) {
  uint32_t slot = 0;
  if (bpf_map_update_elem(bpf_map__fd(programs_.scope), &slot, &cgroup_fd, BPF_ANY) != 0) {
    return fail(errno, "scoping the TLS probes to the monitored cgroup");
  }
  for (const char* dir : kSystemLibraryDirs) {
    DIR* entries = opendir(dir);
    if (!entries) continue;
    while (dirent* entry = readdir(entries)) {
      if (!isSslLibraryName(entry->d_name)) continue;
      std::string path = std::string(dir) + "/" + entry->d_name;
      struct stat st {};
      if (stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) attachLibrary(path, st.st_dev, st.st_ino);
    }
    closedir(entries);
  }
  scan();
  return {};
}

void TlsProbes::scan() {
  bool full = scans_++ % kFullScanEvery == 0;
  DIR* proc = opendir(proc_root_.c_str());
  if (!proc) return;
  std::unordered_set<int> alive;
  while (dirent* entry = readdir(proc)) {
    int pid = 0;
    if (!parseNumber(std::string_view(entry->d_name), pid, 10)) continue;
    alive.insert(pid);
    if (full || !seen_.contains(pid)) scanProcess(pid);
  }
  closedir(proc);
  seen_ = std::move(alive);
}

void TlsProbes::scanProcess(int pid) {
  std::string base = proc_root_ + "/" + std::to_string(pid);
  std::ifstream file(base + "/maps");
  if (!file) return;  // gone already, or a kernel thread
  std::stringstream text;
  text << file.rdbuf();
  for (const MappedLibrary& library : findSslLibraries(text.str())) {
    // The path is the process's own (its mount namespace): reach it through its root.
    attachLibrary(base + "/root" + library.path, library.device, library.inode);
  }
}

void TlsProbes::attachLibrary(const std::string& path, uint64_t device, uint64_t inode) {
  if (attached_.contains({device, inode})) return;
  bool required = attachProbe(programs_.write, path, "SSL_write", false) &&
                  attachProbe(programs_.write_ret, path, "SSL_write", true) &&
                  attachProbe(programs_.read, path, "SSL_read", false) &&
                  attachProbe(programs_.read_ret, path, "SSL_read", true) &&
                  attachProbe(programs_.handshake, path, "SSL_do_handshake", false) &&
                  attachProbe(programs_.handshake_ret, path, "SSL_do_handshake", true);
  if (!required) {
    ++attach_failures_;
    logger("tls")->warn("no TLS plaintext from {}: SSL_do_handshake/SSL_write/SSL_read probes could not attach", path);
    return;
  }
  // OpenSSL 1.1.1 and later; older libraries have only the plain calls.
  bool ex = attachProbe(programs_.write_ex, path, "SSL_write_ex", false) &&
            attachProbe(programs_.write_ret, path, "SSL_write_ex", true) &&
            attachProbe(programs_.read_ex, path, "SSL_read_ex", false) &&
            attachProbe(programs_.read_ret, path, "SSL_read_ex", true);
  attached_.insert({device, inode});
  logger("tls")->info("TLS plaintext probes on {}{}", path, ex ? "" : " (without the _ex calls)");
}

bool TlsProbes::attachProbe(bpf_program* program, const std::string& path, const char* symbol, bool retprobe) {
  LIBBPF_OPTS(bpf_uprobe_opts, options, .retprobe = retprobe, .func_name = symbol);
  bpf_link* link = bpf_program__attach_uprobe_opts(program, -1, path.c_str(), 0, &options);
  if (!link) {
    logger("tls")->debug("uprobe {}{} on {}: {}", symbol, retprobe ? " (return)" : "", path, strerror(errno));
    return false;
  }
  links_.push_back(link);
  return true;
}

}  // namespace apiwarden::loader
