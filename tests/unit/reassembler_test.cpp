// TCP stream reassembly: order, retransmits, overlaps, holes, wraparound, bounded pending.
#include "agent/flows/reassembler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>

namespace apiwarden::flows {
namespace {

// Renders the delivered stream: data as is, each gap as '#' per missing byte.
struct Collector : StreamSink {
  std::string out;
  void onData(std::span<const uint8_t> data) override { out.append(data.begin(), data.end()); }
  void onGap(uint64_t bytes) override { out.append(bytes, '#'); }
};

std::span<const uint8_t> bytes(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

TEST(Reassembler, InOrderAndTruncated) {
  StreamReassembler r;
  Collector c;
  r.push(100, 5, bytes("hello"), c);
  r.push(105, 6, bytes("wor"), c);  // only 3 of 6 bytes captured
  r.push(111, 1, bytes("!"), c);
  EXPECT_EQ(c.out, "hellowor###!");
  EXPECT_EQ(r.stats().gap_bytes, 3u);
}

TEST(Reassembler, RetransmitsAndOverlapsAreDeliveredOnce) {
  StreamReassembler r;
  Collector c;
  r.push(1000, 4, bytes("abcd"), c);
  r.push(1000, 4, bytes("abcd"), c);    // retransmit
  r.push(1002, 4, bytes("cdef"), c);    // overlaps two delivered bytes
  r.push(1006, 4, bytes("gh"), c);      // captured prefix only
  r.push(1004, 6, bytes("efghij"), c);  // overlap reaching into the uncaptured part
  EXPECT_EQ(c.out, "abcdefgh##");
  EXPECT_EQ(r.stats().duplicate_bytes, 4u + 2u + 6u);
}

TEST(Reassembler, OutOfOrderIsHeldThenDelivered) {
  StreamReassembler r;
  Collector c;
  r.push(10, 3, bytes("abc"), c);
  r.push(16, 3, bytes("ghi"), c);
  r.push(13, 3, bytes("def"), c);
  EXPECT_EQ(c.out, "abcdefghi");
  EXPECT_EQ(r.stats().out_of_order_segments, 1u);
}

TEST(Reassembler, SequenceNumbersWrap) {
  StreamReassembler r;
  Collector c;
  r.push(0xFFFFFFFEu, 4, bytes("wxyz"), c);
  r.push(2, 3, bytes("123"), c);
  r.push(0xFFFFFFFFu, 2, bytes("xy"), c);  // retransmit across the wrap
  EXPECT_EQ(c.out, "wxyz123");
  EXPECT_EQ(r.stats().duplicate_bytes, 2u);
}

TEST(Reassembler, PendingOverflowForcesAGap) {
  ReassemblerLimits limits;
  limits.max_pending_segments = 2;
  StreamReassembler r(limits);
  Collector c;
  r.push(0, 1, bytes("a"), c);
  r.push(5, 1, bytes("f"), c);
  r.push(7, 1, bytes("h"), c);
  EXPECT_EQ(c.out, "a");
  r.push(9, 1, bytes("j"), c);  // a third pending segment: give up on the first hole
  EXPECT_EQ(c.out, "a####f");
  EXPECT_EQ(r.stats().pending_overflows, 1u);
  r.flush(c);
  EXPECT_EQ(c.out, "a####f#h#j");
}

TEST(Reassembler, RandomSegmentationShufflingAndDuplicationReproducesTheStream) {
  std::mt19937 rng(11);
  std::string stream(20000, ' ');
  for (auto& ch : stream) ch = static_cast<char>('a' + rng() % 26);
  for (int round = 0; round < 50; ++round) {
    struct Seg {
      uint32_t seq, len;
    };
    std::vector<Seg> segs;
    uint32_t base = static_cast<uint32_t>(rng());
    for (uint32_t pos = 0; pos < stream.size();) {
      uint32_t len = std::min<uint32_t>(1 + rng() % 1500, static_cast<uint32_t>(stream.size()) - pos);
      segs.push_back({pos, len});
      if (rng() % 10 == 0) segs.push_back({pos, len});  // duplicate
      pos += len;
    }
    for (size_t i = 1; i < segs.size(); ++i) {  // shuffle within a small window
      if (rng() % 3 == 0) std::swap(segs[i], segs[i - 1]);
    }
    StreamReassembler r;
    Collector c;
    // The first segment defines the stream start: make it the true first one.
    auto first = std::find_if(segs.begin(), segs.end(), [](const Seg& s) { return s.seq == 0; });
    std::iter_swap(segs.begin(), first);
    for (const auto& s : segs) r.push(base + s.seq, s.len, bytes(stream.substr(s.seq, s.len)), c);
    r.flush(c);
    ASSERT_EQ(c.out, stream) << "round " << round;
  }
}

}  // namespace
}  // namespace apiwarden::flows
