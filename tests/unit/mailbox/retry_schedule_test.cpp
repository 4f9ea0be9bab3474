// The backoff after failed deliveries, pass by pass, with time as an input.
#include "mailbox/retry_schedule.hpp"

#include <gtest/gtest.h>

namespace mailroom::mailbox {
namespace {

using namespace std::chrono_literals;
using clock = retry_schedule::clock;

constexpr auto kCap = std::chrono::milliseconds(1740s);

class RetrySchedule : public testing::Test {
 protected:
  // A pass that ends `after` the previous event; returns the wait it left.
  std::chrono::milliseconds pass(bool failed, bool delivered_any = false,
                                 std::chrono::milliseconds cap = kCap) {
    now_ += 50ms;  // the pass itself
    s_.pass_ended(now_, failed, delivered_any, cap);
    if (!s_.backing_off(now_)) return 0ms;
    const auto wait =
        std::chrono::duration_cast<std::chrono::milliseconds>(s_.next_attempt() - now_);
    EXPECT_TRUE(s_.backing_off(now_ + wait - 1ms));
    EXPECT_FALSE(s_.backing_off(now_ + wait)) << "the next pass may start exactly then";
    now_ += wait;  // the next pass starts when allowed
    return wait;
  }

  retry_schedule s_{2s, 300s};
  clock::time_point now_{};
};

TEST_F(RetrySchedule, NoFailureNoWait) {
  EXPECT_FALSE(s_.backing_off(now_));
  EXPECT_EQ(pass(false), 0ms);
  EXPECT_EQ(s_.delay(), 0ms);
}

TEST_F(RetrySchedule, DoublesFromTwoSecondsToFiveMinutes) {
  std::vector<std::chrono::milliseconds> waits;
  for (int i = 0; i < 10; ++i) waits.push_back(pass(true));
  EXPECT_EQ(waits, (std::vector<std::chrono::milliseconds>{2s, 4s, 8s, 16s, 32s, 64s, 128s, 256s,
                                                           300s, 300s}));
}

TEST_F(RetrySchedule, ASuccessfulPassEndsTheBackoff) {
  pass(true);
  pass(true);
  EXPECT_EQ(pass(false), 0ms);
  EXPECT_FALSE(s_.backing_off(now_));
  EXPECT_EQ(pass(true), 2s) << "starts again from the first step";
}

TEST_F(RetrySchedule, AFailedPassThatDeliveredSomethingStartsAgainAtTheFirstStep) {
  pass(true);
  pass(true);
  EXPECT_EQ(pass(true), 8s);
  EXPECT_EQ(pass(true, /*delivered_any=*/true), 2s);
  EXPECT_EQ(pass(true), 4s);
}

TEST_F(RetrySchedule, NeverLongerThanTheCap) {
  for (int i = 0; i < 5; ++i) pass(true, false, 10s);
  EXPECT_EQ(pass(true, false, 10s), 10s);
  EXPECT_EQ(s_.delay(), 10s);
  // The step goes on doubling underneath: a larger cap shows it.
  EXPECT_EQ(pass(true, false, kCap), 128s);
}

TEST_F(RetrySchedule, NewMailDoesNotShortenTheWait) {
  // Whatever happens in between, a pass may not start before next_attempt():
  // the schedule only answers backing_off(now).
  s_.pass_ended(now_, true, false, kCap);
  for (auto t = now_; t < now_ + 2s; t += 100ms) EXPECT_TRUE(s_.backing_off(t));
  EXPECT_FALSE(s_.backing_off(now_ + 2s));
}

TEST_F(RetrySchedule, TimeWaitedDoesNotCountAsAnAttempt) {
  // Ending the backoff only by the passing of time keeps the step: only a pass
  // moves it.
  s_.pass_ended(now_, true, false, kCap);
  EXPECT_FALSE(s_.backing_off(now_ + 1h));
  EXPECT_EQ(s_.delay(), 2s);
  s_.pass_ended(now_ + 1h, true, false, kCap);
  EXPECT_EQ(s_.delay(), 4s);
}

}  // namespace
}  // namespace mailroom::mailbox
