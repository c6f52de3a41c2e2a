// cgroup id -> path against the real cgroup v2 hierarchy, in a subtree the test creates.
#include "agent/identity/cgroup_resolver.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

namespace apiwarden::identity {
namespace {

struct FakeClock final : Clock {
  uint64_t now = 1'000'000'000;
  uint64_t monotonicNs() const override { return now; }
  uint64_t realtimeNs() const override { return now; }
};

// A cgroup subtree of the test's own, removed at the end even when the test fails.
class CgroupResolverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto mount = CgroupResolver::findCgroup2Mount();
    if (!mount || geteuid() != 0) GTEST_SKIP() << "needs root and a cgroup v2 mount";
    mount_ = *mount;
    root_ = "/apiwarden-unit-" + std::to_string(getpid());
    ASSERT_EQ(mkdir((mount_ + root_).c_str(), 0755), 0);
  }
  void TearDown() override {
    if (root_.empty()) return;
    for (const char* child : {"/b/c", "/b", "/a"}) rmdir((mount_ + root_ + child).c_str());
    rmdir((mount_ + root_).c_str());
  }
  uint64_t make(const std::string& child) {
    EXPECT_EQ(mkdir((mount_ + root_ + child).c_str(), 0755), 0);
    return *CgroupResolver::idOf(mount_ + root_ + child);
  }

  std::string mount_, root_;
  FakeClock clock_;
};

TEST_F(CgroupResolverTest, ResolvesNestedCgroups) {
  uint64_t a = make("/a");
  make("/b");
  uint64_t c = make("/b/c");
  CgroupResolver resolver(mount_, clock_);
  EXPECT_EQ(resolver.pathOf(a), root_ + "/a");
  EXPECT_EQ(resolver.pathOf(c), root_ + "/b/c");
  EXPECT_EQ(resolver.pathOf(*CgroupResolver::idOf(mount_)), "/");
  EXPECT_EQ(resolver.stats().rescans, 1u);
}

TEST_F(CgroupResolverTest, RescansOnAMissAtMostOncePerInterval) {
  CgroupResolver resolver(mount_, clock_);
  EXPECT_EQ(resolver.pathOf(*CgroupResolver::idOf(mount_ + root_)), root_);
  uint64_t late = make("/a");
  EXPECT_EQ(resolver.pathOf(late), std::nullopt);  // too soon to rescan
  EXPECT_EQ(resolver.stats().misses, 1u);
  clock_.now += 1'000'000'000;
  EXPECT_EQ(resolver.pathOf(late), root_ + "/a");
  EXPECT_EQ(resolver.stats().rescans, 2u);
}

TEST_F(CgroupResolverTest, DeletedCgroupsDisappearOnRescan) {
  uint64_t a = make("/a");
  CgroupResolver resolver(mount_, clock_);
  EXPECT_TRUE(resolver.pathOf(a));
  ASSERT_EQ(rmdir((mount_ + root_ + "/a").c_str()), 0);
  clock_.now += 2'000'000'000;
  EXPECT_FALSE(resolver.pathOf(12345678901234ULL));  // forces the rescan
  EXPECT_EQ(resolver.pathOf(a), std::nullopt);
}

TEST_F(CgroupResolverTest, ScanStopsAtMaxEntries) {
  make("/a");
  make("/b");
  CgroupResolverOptions options;
  options.max_entries = 1;
  CgroupResolver resolver(mount_, clock_, options);
  resolver.pathOf(1);
  EXPECT_EQ(resolver.stats().truncated_scans, 1u);
}

TEST(Mountinfo, OctalEscapesAreUndone) {
  EXPECT_EQ(unescapeMountinfo("/mnt/with\\040space"), "/mnt/with space");
  EXPECT_EQ(unescapeMountinfo("/tab\\011and\\134back"), "/tab\tand\\back");
  EXPECT_EQ(unescapeMountinfo("/not\\09escape"), "/not\\09escape");
  EXPECT_EQ(unescapeMountinfo("/end\\04"), "/end\\04");
}

}  // namespace
}  // namespace apiwarden::identity
