#include "agent/loader/enforce_program.h"

#include "agent/identity/cgroup_resolver.h"
#include "agent/loader/capture_program.h"
#include "apiwarden/common/log.h"
#include "apiwarden_enforce.skel.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <vector>

namespace apiwarden::loader {
namespace {

namespace fs = std::filesystem;

bool isBpffs(const std::string& path) {
  struct statfs st {};
  return statfs(path.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

// The pin directory must live on bpffs; a fresh machine has none mounted at /sys/fs/bpf.
Result<void> preparePinDir(const std::string& pin_dir) {
  fs::path dir(pin_dir);
  fs::path mount_point = dir.parent_path();
  if (!isBpffs(mount_point)) {
    if (mount_point != "/sys/fs/bpf") {
      return fail(EINVAL, "pin directory " + pin_dir + " is not on a bpf filesystem (mount -t bpf bpf " +
                              mount_point.string() + ")");
    }
    if (::mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") != 0) return fail(errno, "mounting bpffs at /sys/fs/bpf");
    logger("loader")->info("mounted bpffs at /sys/fs/bpf");
  }
  for (const fs::path& sub : {dir, dir / "maps", dir / "links"}) {
    if (::mkdir(sub.c_str(), 0700) != 0 && errno != EEXIST) return fail(errno, "creating " + sub.string());
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<EnforceProgram>> EnforceProgram::open(const EnforceOptions& options) {
  std::unique_ptr<EnforceProgram> program(new EnforceProgram());
  program->pin_dir_ = options.pin_dir;
  if (auto ready = preparePinDir(options.pin_dir); !ready) return std::unexpected(ready.error());
  program->skel_ = apiwarden_enforce__open();
  if (!program->skel_) return fail(errno, "opening the enforcement BPF object");
  if (auto pinned = program->pinMaps(); !pinned) return std::unexpected(pinned.error());
  if (apiwarden_enforce__load(program->skel_) != 0) {
    int err = errno;
    return fail(err, "loading the enforcement programs (a pinned map under " + options.pin_dir +
                         "/maps of an incompatible version also fails here); libbpf said:" + recentWarnings());
  }
  if (auto attached = program->attach(options.cgroup_dir); !attached) return std::unexpected(attached.error());
  program->removeStaleMapPins();
  if (auto ready = program->initConfig(options); !ready) return std::unexpected(ready.error());
  return program;
}

// Every map is pinned by name: libbpf reuses a pinned one (checking its type and sizes) or pins
// the new one after creating it.
Result<void> EnforceProgram::pinMaps() {
  bpf_map* map;
  bpf_object__for_each_map(map, skel_->obj) {
    std::string path = pin_dir_ + "/maps/" + bpf_map__name(map);
    if (bpf_map__set_pin_path(map, path.c_str()) != 0) return fail(errno, "setting pin path " + path);
  }
  return {};
}

// Pins an earlier version left for maps this one no longer has: its programs, which used them,
// have just been replaced, so nothing refers to them any more.
void EnforceProgram::removeStaleMapPins() {
  std::set<std::string> ours;
  bpf_map* map;
  bpf_object__for_each_map(map, skel_->obj) ours.insert(bpf_map__name(map));
  std::vector<fs::path> stale;
  std::error_code ec;
  for (auto it = fs::directory_iterator(pin_dir_ + "/maps", ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    if (!ours.count(it->path().filename().string())) stale.push_back(it->path());
  }
  for (const fs::path& path : stale) {
    std::string name = path.filename().string();
    std::error_code removed;
    fs::remove(path, removed);
    if (removed) {
      logger("loader")->warn("cannot remove the pin of map {}, which this version no longer uses: {}", name,
                             removed.message());
    } else {
      logger("loader")->info("removed the pin of map {}, which this version no longer uses", name);
    }
  }
}

// The credential hash key is made once per installation and kept with the pinned config, with the
// version of the hash the credential rules were installed under.
Result<void> EnforceProgram::initConfig(const EnforceOptions& options) {
  auto current = config();
  if (!current) return std::unexpected(current.error());
  apiwarden_enforce_config fresh = *current;
  if (fresh.hash_key[0] == 0 && fresh.hash_key[1] == 0) {
    if (getrandom(fresh.hash_key, sizeof(fresh.hash_key), 0) != sizeof(fresh.hash_key)) {
      return fail(errno, "reading random bytes for the credential hash key");
    }
  } else if (fresh.hash_version != APIWARDEN_CRED_HASH_VERSION) {
    stale_credential_hashes_ = true;
    logger("loader")->warn("the pinned credential rules were hashed by an earlier version (hash {}, now {})",
                           fresh.hash_version, APIWARDEN_CRED_HASH_VERSION);
  }
  fresh.hash_version = APIWARDEN_CRED_HASH_VERSION;
  fs::path relative = fs::path(options.cgroup_dir).lexically_relative(options.cgroup_mount);
  fresh.root_cgroup = cgroup_id_;
  fresh.root_level = static_cast<uint32_t>(std::distance(relative.begin(), relative.end()));
  return setConfig(fresh);
}

Result<void> EnforceProgram::attach(const std::string& cgroup_dir) {
  auto id = identity::CgroupResolver::idOf(cgroup_dir);
  if (!id) return std::unexpected(id.error());
  cgroup_id_ = *id;
  int cgroup_fd = ::open(cgroup_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cgroup_fd < 0) return fail(errno, "opening cgroup " + cgroup_dir);

  // The sk_msg program first: sockets take the sockhash's programs when they join it.
  bpf_program* msg = skel_->progs.apiwarden_enforce_msg;
  bpf_program* programs[] = {msg,
                             skel_->progs.apiwarden_enforce_connect4,
                             skel_->progs.apiwarden_enforce_connect6,
                             skel_->progs.apiwarden_enforce_egress,
                             skel_->progs.apiwarden_enforce_ingress,
                             skel_->progs.apiwarden_enforce_sockops};
  int adopted = 0;
  Result<void> result;
  for (bpf_program* prog : programs) {
    std::string path = pin_dir_ + "/links/" + bpf_program__name(prog);
    int fd = bpf_obj_get(path.c_str());
    if (fd >= 0) {
      // An earlier agent's link: check where it is attached, then swap in this program.
      bpf_link_info info{};
      uint32_t len = sizeof(info);
      if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) {
        result = fail(errno, "reading pinned link " + path);
      } else if (info.type == BPF_LINK_TYPE_CGROUP && info.cgroup.cgroup_id != cgroup_id_) {
        result = fail(EEXIST, "pinned link " + path + " is attached to cgroup id " +
                                  std::to_string(info.cgroup.cgroup_id) + ", not to " + cgroup_dir +
                                  " (id " + std::to_string(cgroup_id_) + "): another agent's enforcement, or an "
                                  "earlier one with another --cgroup-root; remove " + pin_dir_ + " to start over");
      } else if (bpf_link_update(fd, bpf_program__fd(prog), nullptr) != 0) {
        result = fail(errno, "replacing the program of pinned link " + path);
      }
      if (!result) {
        ::close(fd);
        break;
      }
      link_fds_.push_back(fd);
      ++adopted;
      continue;
    }
    if (errno != ENOENT) {
      result = fail(errno, "opening pinned link " + path);
      break;
    }
    int link_fd = prog == msg ? bpf_link_create(bpf_program__fd(prog), bpf_map__fd(skel_->maps.apiwarden_enforce_sockhash),
                                                BPF_SK_MSG_VERDICT, nullptr)
                              : bpf_link_create(bpf_program__fd(prog), cgroup_fd, bpf_program__expected_attach_type(prog),
                                                nullptr);
    if (link_fd < 0) {
      result = fail(errno, std::string("attaching ") + bpf_program__name(prog) +
                               (prog == msg ? " to the sockhash" : " to cgroup " + cgroup_dir) + recentWarnings());
      break;
    }
    // The pin keeps it attached after we are gone.
    if (bpf_obj_pin(link_fd, path.c_str()) != 0) {
      result = fail(errno, "pinning link " + path);
      ::close(link_fd);
      break;
    }
    link_fds_.push_back(link_fd);
  }
  ::close(cgroup_fd);
  if (!result) return result;
  adopted_ = adopted > 0;
  logger("loader")->info("enforcement attached to cgroup {} ({} links taken over, {} new), pinned under {}",
                         cgroup_dir, adopted, link_fds_.size() - static_cast<size_t>(adopted), pin_dir_);
  return {};
}

EnforceProgram::~EnforceProgram() {
  for (int fd : link_fds_) ::close(fd);
  if (skel_) apiwarden_enforce__destroy(skel_);
}

Result<void> EnforceProgram::putCut(uint64_t cgroup_id, const apiwarden_cut_rule& rule) {
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.apiwarden_cuts), &cgroup_id, &rule, BPF_ANY) != 0) {
    return fail(errno, "writing cut rule for cgroup " + std::to_string(cgroup_id));
  }
  return {};
}

Result<void> EnforceProgram::deleteCut(uint64_t cgroup_id) {
  if (bpf_map_delete_elem(bpf_map__fd(skel_->maps.apiwarden_cuts), &cgroup_id) != 0 && errno != ENOENT) {
    return fail(errno, "deleting cut rule for cgroup " + std::to_string(cgroup_id));
  }
  return {};
}

namespace {

template <typename Value>
Result<std::vector<std::pair<uint64_t, Value>>> dumpMap(int fd, const char* what) {
  std::vector<std::pair<uint64_t, Value>> out;
  uint64_t key = 0, next = 0;
  const void* previous = nullptr;
  while (bpf_map_get_next_key(fd, previous, &next) == 0) {
    Value value{};
    if (bpf_map_lookup_elem(fd, &next, &value) == 0) out.emplace_back(next, value);
    key = next;
    previous = &key;
  }
  if (errno != ENOENT) return fail(errno, std::string("listing ") + what);
  return out;
}

}  // namespace

Result<std::vector<std::pair<uint64_t, apiwarden_cut_rule>>> EnforceProgram::cuts() const {
  return dumpMap<apiwarden_cut_rule>(bpf_map__fd(skel_->maps.apiwarden_cuts), "cut rules");
}

Result<void> EnforceProgram::putDestination(const apiwarden_dest_key& key, const apiwarden_dest_value& value) {
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.apiwarden_cut_dests), &key, &value, BPF_ANY) != 0) {
    return fail(errno, "writing a cut destination");
  }
  return {};
}

Result<void> EnforceProgram::deleteDestination(const apiwarden_dest_key& key) {
  if (bpf_map_delete_elem(bpf_map__fd(skel_->maps.apiwarden_cut_dests), &key) != 0 && errno != ENOENT) {
    return fail(errno, "deleting a cut destination");
  }
  return {};
}

Result<void> EnforceProgram::putCredential(uint64_t token_hash, const apiwarden_cred_rule& rule) {
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.apiwarden_cred_rules), &token_hash, &rule, BPF_ANY) != 0) {
    return fail(errno, "writing a credential rule");
  }
  return {};
}

Result<void> EnforceProgram::deleteCredential(uint64_t token_hash) {
  if (bpf_map_delete_elem(bpf_map__fd(skel_->maps.apiwarden_cred_rules), &token_hash) != 0 && errno != ENOENT) {
    return fail(errno, "deleting a credential rule");
  }
  return {};
}

Result<std::vector<std::pair<uint64_t, apiwarden_cred_rule>>> EnforceProgram::credentials() const {
  return dumpMap<apiwarden_cred_rule>(bpf_map__fd(skel_->maps.apiwarden_cred_rules), "credential rules");
}

Result<apiwarden_enforce_config> EnforceProgram::config() const {
  uint32_t zero = 0;
  apiwarden_enforce_config out{};
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.apiwarden_enforce_config), &zero, &out) != 0) {
    return fail(errno, "reading the enforcement config");
  }
  return out;
}

Result<void> EnforceProgram::setConfig(const apiwarden_enforce_config& config) {
  uint32_t zero = 0;
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.apiwarden_enforce_config), &zero, &config, BPF_ANY) != 0) {
    return fail(errno, "writing the enforcement config");
  }
  return {};
}

Result<apiwarden_rule_counters> EnforceProgram::counters(uint32_t rule_id) const {
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return fail(-cpus, "counting possible CPUs");
  std::vector<apiwarden_rule_counters> values(static_cast<size_t>(cpus));
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.apiwarden_rule_counters), &rule_id, values.data()) != 0) {
    return fail(errno, "reading the counters of rule " + std::to_string(rule_id));
  }
  apiwarden_rule_counters total{};
  for (const auto& v : values) {
    total.connects += v.connects;
    total.packets += v.packets;
    total.aborted += v.aborted;
    total.requests += v.requests;
  }
  return total;
}

Result<void> EnforceProgram::resetCounters(uint32_t rule_id) {
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return fail(-cpus, "counting possible CPUs");
  std::vector<apiwarden_rule_counters> zeros(static_cast<size_t>(cpus));
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.apiwarden_rule_counters), &rule_id, zeros.data(), BPF_ANY) != 0) {
    return fail(errno, "resetting the counters of rule " + std::to_string(rule_id));
  }
  return {};
}

Result<void> EnforceProgram::teardown() { return runIterator(skel_->progs.apiwarden_enforce_teardown, "teardown"); }

Result<void> EnforceProgram::joinSockhash() {
  return runIterator(skel_->progs.apiwarden_enforce_join_sockhash, "sockhash join");
}

// Runs an iter/tcp program over every TCP socket once (it prints nothing).
Result<void> EnforceProgram::runIterator(bpf_program* program, const char* what) {
  bpf_link* link = bpf_program__attach_iter(program, nullptr);
  if (!link) return fail(errno, std::string("creating the ") + what + " iterator" + recentWarnings());
  int fd = bpf_iter_create(bpf_link__fd(link));
  Result<void> result;
  if (fd < 0) {
    result = fail(errno, std::string("starting the ") + what + " iterator");
  } else {
    char buffer[64];
    ssize_t n;
    while ((n = ::read(fd, buffer, sizeof(buffer))) > 0) {
    }
    if (n < 0) result = fail(errno, std::string("running the ") + what + " iterator");
    ::close(fd);
  }
  bpf_link__destroy(link);
  return result;
}

size_t EnforceProgram::pinnedObjects() const {
  size_t count = 0;
  std::error_code ec;
  for (const char* sub : {"/maps", "/links"}) {
    for (auto it = fs::directory_iterator(pin_dir_ + sub, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
      ++count;
    }
  }
  return count;
}

}  // namespace apiwarden::loader
