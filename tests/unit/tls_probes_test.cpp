// findSslLibraries over /proc/<pid>/maps text.
#include "agent/loader/tls_probes.h"

#include <gtest/gtest.h>
#include <sys/sysmacros.h>

namespace apiwarden::loader {
namespace {

TEST(FindSslLibraries, EachLibsslFileOnceWithItsDeviceAndInode) {
  const char* maps =
      "55d0c0a00000-55d0c0a2a000 r--p 00000000 fe:01 1311                       /usr/bin/curl\n"
      "7f1a2b000000-7f1a2b01f000 r--p 00000000 fe:01 4052   /usr/lib/x86_64-linux-gnu/libssl.so.3\n"
      "7f1a2b01f000-7f1a2b07d000 r-xp 0001f000 fe:01 4052   /usr/lib/x86_64-linux-gnu/libssl.so.3\n"
      "7f1a2c000000-7f1a2c200000 r-xp 00000000 fe:01 4051   /usr/lib/x86_64-linux-gnu/libcrypto.so.3\n"
      "7f1a2d000000-7f1a2d010000 r-xp 00000000 00:2f 98765  /opt/app/lib/libssl.so.1.1\n"
      "7f1a2e000000-7f1a2e001000 rw-p 00000000 00:00 0 \n"
      "7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0                          [stack]\n"
      "7f1a2f000000-7f1a2f010000 r-xp 00000000 fe:01 777    /tmp/libssl.so.3 (deleted)\n"
      "7f1a30000000-7f1a30010000 r-xp 00000000 fe:01 778    /tmp/notlibssl.so.3\n";
  auto found = findSslLibraries(maps);
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0], (MappedLibrary{"/usr/lib/x86_64-linux-gnu/libssl.so.3", makedev(0xfe, 0x01), 4052}));
  EXPECT_EQ(found[1], (MappedLibrary{"/opt/app/lib/libssl.so.1.1", makedev(0x00, 0x2f), 98765}));
}

TEST(FindSslLibraries, MalformedLinesAreSkipped) {
  EXPECT_TRUE(findSslLibraries("").empty());
  EXPECT_TRUE(findSslLibraries("garbage\n\n   \n").empty());
  EXPECT_TRUE(findSslLibraries("1-2 r-xp 0 zz:01 12 /usr/lib/libssl.so.3\n").empty());
  EXPECT_TRUE(findSslLibraries("1-2 r-xp 0 fe:01 notanumber /usr/lib/libssl.so.3\n").empty());
  EXPECT_TRUE(findSslLibraries("1-2 r-xp 0 fe01 12 /usr/lib/libssl.so.3").empty());
  EXPECT_EQ(findSslLibraries("1-2 r-xp 0 fe:01 12 /usr/lib/libssl.so.3").size(), 1u);  // no final newline
}

}  // namespace
}  // namespace apiwarden::loader
