// cgroup v2 id -> cgroup path, cached. The id of a cgroup v2 directory is its inode number.
#pragma once

#include "apiwarden/common/clock.h"
#include "apiwarden/common/result.h"

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

namespace apiwarden::identity {

struct CgroupResolverOptions {
  uint64_t min_rescan_interval_ns = 1'000'000'000;  // a miss rescans at most this often
  size_t max_entries = 65536;                       // cgroups remembered; beyond, the scan stops
};

struct CgroupResolverStats {
  uint64_t hits = 0;
  uint64_t misses = 0;   // lookups that found nothing, even after a rescan
  uint64_t rescans = 0;
  uint64_t truncated_scans = 0;  // scans stopped at max_entries
};

// Undoes /proc/self/mountinfo's octal escapes ("\\040" is a space).
std::string unescapeMountinfo(const std::string& field);

class CgroupResolver {
 public:
  // mount: the cgroup2 mount point. Paths are reported relative to it, with a leading '/'
  // ("/" for the root itself).
  CgroupResolver(std::string mount, const Clock& clock, CgroupResolverOptions options = {});

  // The path of a cgroup id; on a miss rescans the hierarchy (rate-limited) and tries again.
  std::optional<std::string> pathOf(uint64_t cgroup_id);

  const CgroupResolverStats& stats() const { return stats_; }
  const std::string& mount() const { return mount_; }

  // The cgroup2 mount point from /proc/self/mountinfo (first cgroup2 entry).
  static Result<std::string> findCgroup2Mount();
  // The cgroup id of a cgroup v2 directory.
  static Result<uint64_t> idOf(const std::string& directory);

 private:
  void rescan();

  std::string mount_;
  const Clock& clock_;
  CgroupResolverOptions options_;
  CgroupResolverStats stats_;
  std::unordered_map<uint64_t, std::string> paths_;
  uint64_t last_scan_ns_ = 0;
  bool scanned_ = false;
};

}  // namespace apiwarden::identity
