// trim_policy: when the heap is trimmed after TLS handshakes (no clock, no I/O).
#include "app/heap_trimmer.hpp"

#include <gtest/gtest.h>

namespace mailroom::app {
namespace {

TEST(TrimPolicy, OneHandshakeArmsTheTimerOnceAndTrimsAtTheNextQuietTick) {
  trim_policy p;
  EXPECT_FALSE(p.armed());
  EXPECT_TRUE(p.on_handshake(1));   // arm
  EXPECT_FALSE(p.on_handshake(2));  // already armed
  EXPECT_FALSE(p.on_tick(2));       // a handshake since arming: one more tick
  EXPECT_TRUE(p.on_tick(2));        // quiet: trim
  EXPECT_FALSE(p.armed());          // and nothing wakes up until the next handshake
  EXPECT_TRUE(p.on_handshake(3));
}

TEST(TrimPolicy, ASingleHandshakeTrimsAfterOneTick) {
  trim_policy p;
  EXPECT_TRUE(p.on_handshake(7));
  EXPECT_TRUE(p.on_tick(7));
}

TEST(TrimPolicy, ASteadyChurnIsTrimmedAtTheLatestAfterMaxTicks) {
  trim_policy p(4);
  EXPECT_TRUE(p.on_handshake(0));
  std::uint64_t n = 0;
  int ticks = 0;
  bool trimmed = false;
  while (!trimmed && ticks < 100) {
    n += 10;  // handshakes between every two ticks
    ++ticks;
    trimmed = p.on_tick(n);
  }
  EXPECT_TRUE(trimmed);
  EXPECT_EQ(ticks, 4);
  EXPECT_TRUE(p.on_handshake(n + 1));  // the churn arms it again
}

}  // namespace
}  // namespace mailroom::app
