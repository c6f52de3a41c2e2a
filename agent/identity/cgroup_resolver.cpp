#include "agent/identity/cgroup_resolver.h"

#include <dirent.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <vector>

namespace apiwarden::identity {
namespace {

bool isOctal(char c) { return c >= '0' && c <= '7'; }

}  // namespace

// Mount points in mountinfo escape space, tab, newline and backslash as \ooo.
std::string unescapeMountinfo(const std::string& field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() && isOctal(field[i + 1]) && isOctal(field[i + 2]) &&
        isOctal(field[i + 3])) {
      out.push_back(static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 + (field[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(field[i]);
    }
  }
  return out;
}


CgroupResolver::CgroupResolver(std::string mount, const Clock& clock, CgroupResolverOptions options)
    : mount_(std::move(mount)), clock_(clock), options_(options) {}

Result<std::string> CgroupResolver::findCgroup2Mount() {
  std::ifstream mountinfo("/proc/self/mountinfo");
  if (!mountinfo) return fail(errno, "reading /proc/self/mountinfo");
  std::string line;
  while (std::getline(mountinfo, line)) {
    auto separator = line.find(" - ");
    if (separator == std::string::npos) continue;
    std::istringstream after(line.substr(separator + 3));
    std::string fstype;
    after >> fstype;
    if (fstype != "cgroup2") continue;
    std::istringstream before(line.substr(0, separator));
    std::string field;
    for (int i = 0; i < 5 && before >> field; ++i) {
    }
    return unescapeMountinfo(field);
  }
  return fail(ENOENT, "no cgroup2 file system is mounted (see /proc/self/mountinfo)");
}

Result<uint64_t> CgroupResolver::idOf(const std::string& directory) {
  struct stat st {};
  if (stat(directory.c_str(), &st) != 0) return fail(errno, "stat " + directory);
  if (!S_ISDIR(st.st_mode)) return fail(ENOTDIR, directory + " is not a cgroup directory");
  return static_cast<uint64_t>(st.st_ino);
}

void CgroupResolver::rescan() {
  ++stats_.rescans;
  last_scan_ns_ = clock_.monotonicNs();
  scanned_ = true;
  paths_.clear();
  std::vector<std::string> stack{""};  // paths relative to the mount, "" for the mount itself
  while (!stack.empty()) {
    std::string relative = std::move(stack.back());
    stack.pop_back();
    std::string absolute = mount_ + relative;
    struct stat st {};
    if (lstat(absolute.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;  // vanished meanwhile
    if (paths_.size() >= options_.max_entries) {
      ++stats_.truncated_scans;
      return;
    }
    paths_.emplace(static_cast<uint64_t>(st.st_ino), relative.empty() ? "/" : relative);
    DIR* dir = opendir(absolute.c_str());
    if (!dir) continue;
    while (dirent* entry = readdir(dir)) {
      if (entry->d_type != DT_DIR) continue;
      std::string_view name = entry->d_name;
      if (name == "." || name == "..") continue;
      stack.push_back(relative + "/" + std::string(name));
    }
    closedir(dir);
  }
}

std::optional<std::string> CgroupResolver::pathOf(uint64_t cgroup_id) {
  if (auto it = paths_.find(cgroup_id); it != paths_.end()) {
    ++stats_.hits;
    return it->second;
  }
  if (!scanned_ || clock_.monotonicNs() - last_scan_ns_ >= options_.min_rescan_interval_ns) {
    rescan();
    if (auto it = paths_.find(cgroup_id); it != paths_.end()) {
      ++stats_.hits;
      return it->second;
    }
  }
  ++stats_.misses;
  return std::nullopt;
}

}  // namespace apiwarden::identity
