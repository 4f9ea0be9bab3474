// cluster::lease: one mailbox's lease, driven by hand (no Redis, no clock).
#include "cluster/lease.hpp"

#include <gtest/gtest.h>

namespace mailroom::cluster {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

class Lease : public ::testing::Test {
 protected:
  const lease_timing timing_ = lease_timing::from_ttl(seconds(9));  // renew 3 s, safety 0.9 s
  lease l_{timing_};
  clock::time_point t0_ = clock::time_point{} + seconds(1000);

  // Takes the lease at t0_ and starts the watcher.
  void hold() {
    l_.want(true);
    ASSERT_EQ(l_.next(t0_), lease_action::take);
    l_.on_take(lease_reply::done, t0_);
    ASSERT_EQ(l_.next(t0_), lease_action::start_watcher);
    ASSERT_EQ(l_.next(t0_), lease_action::none);
    ASSERT_EQ(l_.state(), lease_state::held);
  }
};

TEST_F(Lease, NotWantedDoesNothing) {
  EXPECT_EQ(l_.next(t0_), lease_action::none);
  EXPECT_EQ(l_.next_deadline(), clock::time_point::max());
}

TEST_F(Lease, TakeThenWatchThenRenewEveryThirdOfTheTtl) {
  hold();
  EXPECT_TRUE(l_.may_watch(t0_));
  EXPECT_EQ(l_.valid_until(), t0_ + seconds(9) - milliseconds(900));
  EXPECT_EQ(l_.next_deadline(), t0_ + seconds(3));
  EXPECT_EQ(l_.next(t0_ + seconds(2)), lease_action::none);
  const auto sent = t0_ + seconds(3);
  EXPECT_EQ(l_.next(sent), lease_action::renew);
  EXPECT_EQ(l_.next(sent), lease_action::none);  // one request at a time
  l_.on_renew(lease_reply::done, sent);
  EXPECT_EQ(l_.valid_until(), sent + seconds(9) - milliseconds(900));
}

TEST_F(Lease, AKeyHeldElsewhereIsRetriedATenthOfTheTtlLater) {
  l_.want(true);
  ASSERT_EQ(l_.next(t0_), lease_action::take);
  l_.on_take(lease_reply::not_ours, t0_);
  EXPECT_EQ(l_.state(), lease_state::idle);
  EXPECT_EQ(l_.next(t0_ + milliseconds(500)), lease_action::none);
  EXPECT_EQ(l_.next_deadline(), t0_ + milliseconds(900));
  EXPECT_EQ(l_.next(t0_ + milliseconds(900)), lease_action::take);
}

TEST(LeaseTiming, FromTtl) {
  const auto t = lease_timing::from_ttl(seconds(10));
  EXPECT_EQ(t.renew_every, clock::duration(seconds(10)) / 3);
  EXPECT_EQ(t.heartbeat_every, seconds(2));
  EXPECT_EQ(t.safety, seconds(1));
  EXPECT_EQ(t.retry_take, seconds(1));
  EXPECT_EQ(lease_timing::from_ttl(seconds(3)).retry_take, milliseconds(500));
}

TEST_F(Lease, ARenewalThatFindsAnotherOwnerAbortsAtOnce) {
  hold();
  const auto sent = t0_ + seconds(3);
  ASSERT_EQ(l_.next(sent), lease_action::renew);
  l_.on_renew(lease_reply::not_ours, sent);
  EXPECT_EQ(l_.next(sent + milliseconds(1)), lease_action::abort_watcher);
  EXPECT_FALSE(l_.may_watch(sent + milliseconds(1)));
  EXPECT_EQ(l_.next(sent + milliseconds(2)), lease_action::none);  // until the watcher ended
  l_.on_watcher_stopped();
  EXPECT_EQ(l_.next(sent + milliseconds(3)), lease_action::release);  // compare-and-set: harmless
  l_.on_release(lease_reply::not_ours);
  EXPECT_EQ(l_.state(), lease_state::idle);
}

TEST_F(Lease, RedisUnreachableLongerThanTheTtlAbortsBeforeTheKeyExpires) {
  hold();
  // Every renewal fails; retries come a quarter period after each failure.
  clock::time_point now = t0_ + seconds(3);
  clock::time_point aborted_at{};
  for (int i = 0; i < 100 && aborted_at == clock::time_point{}; ++i) {
    const auto a = l_.next(now);
    if (a == lease_action::renew) {
      EXPECT_TRUE(l_.may_watch(now));
      l_.on_renew(lease_reply::unavailable, now);
    } else if (a == lease_action::abort_watcher) {
      aborted_at = now;
      break;
    }
    now = std::min(l_.next_deadline(), now + milliseconds(250));
  }
  ASSERT_NE(aborted_at, clock::time_point{});
  // Redis started the key's TTL no earlier than t0_: it lives until
  // t0_ + 9 s at the soonest. The watcher stopped before that.
  EXPECT_LE(aborted_at, t0_ + seconds(9) - milliseconds(900));
  EXPECT_LT(aborted_at, t0_ + seconds(9));
  EXPECT_FALSE(l_.may_watch(aborted_at));
}

TEST_F(Lease, APausedProcessAbortsWhenItWakesUpPastValidUntil) {
  hold();
  // Nothing ran for 20 s (SIGSTOP, a stalled VM): the key has expired and
  // another instance may own the mailbox. The first thing on waking: abort.
  const auto woke = t0_ + seconds(20);
  EXPECT_FALSE(l_.may_watch(woke));
  EXPECT_EQ(l_.next(woke), lease_action::abort_watcher);
  l_.on_watcher_stopped();
  EXPECT_EQ(l_.next(woke), lease_action::release);
  l_.on_release(lease_reply::not_ours);
  // Still wanted: take it again (it fails while the other instance holds it).
  EXPECT_EQ(l_.next(woke), lease_action::take);
}

TEST_F(Lease, ARenewalAnsweredLateCountsFromWhenItWasSent) {
  hold();
  const auto sent = t0_ + seconds(3);
  ASSERT_EQ(l_.next(sent), lease_action::renew);
  // The answer arrives 5 s later: the new TTL started when Redis got the
  // request, which is after `sent`; counting from `sent` is on the safe side.
  l_.on_renew(lease_reply::done, sent);
  EXPECT_EQ(l_.valid_until(), sent + seconds(9) - milliseconds(900));
}

TEST_F(Lease, RenewalRacingExpiryStillAbortsInTime) {
  hold();
  // The renewal is sent just before valid_until and answered after it.
  const auto late = l_.valid_until() - milliseconds(10);
  l_.on_renew(lease_reply::done, t0_);  // a stale answer changes nothing
  ASSERT_EQ(l_.next(late), lease_action::renew);
  EXPECT_EQ(l_.next(l_.valid_until()), lease_action::abort_watcher);
  // The renewal's success arrives after the abort: the lease does not come
  // back to life under a watcher that is being aborted.
  l_.on_renew(lease_reply::done, late);
  EXPECT_EQ(l_.state(), lease_state::aborting);
  l_.on_watcher_stopped();
  EXPECT_EQ(l_.next(late + seconds(1)), lease_action::release);
}

TEST_F(Lease, HandoverStopsGracefullyKeepsRenewingThenReleases) {
  hold();
  l_.want(false);
  const auto t1 = t0_ + seconds(1);
  EXPECT_EQ(l_.next(t1), lease_action::stop_watcher);
  EXPECT_TRUE(l_.may_watch(t1));  // deliveries in flight finish and are flagged
  const auto t3 = t0_ + seconds(3);
  EXPECT_EQ(l_.next(t3), lease_action::renew);
  l_.on_renew(lease_reply::done, t3);
  l_.on_watcher_stopped();
  EXPECT_EQ(l_.next(t3), lease_action::release);
  l_.on_release(lease_reply::done);
  EXPECT_EQ(l_.state(), lease_state::idle);
  EXPECT_EQ(l_.next(t3 + seconds(10)), lease_action::none);  // not wanted: not taken again
}

TEST_F(Lease, AGracefulStopThatOutlivesTheLeaseIsAborted) {
  hold();
  l_.want(false);
  ASSERT_EQ(l_.next(t0_), lease_action::stop_watcher);
  // Redis unreachable during the stop: no renewal succeeds.
  EXPECT_EQ(l_.next(l_.valid_until()), lease_action::abort_watcher);
}

TEST_F(Lease, NotWantedAnyMoreBeforeTheTakeWasAnsweredReleasesWithoutWatching) {
  l_.want(true);
  ASSERT_EQ(l_.next(t0_), lease_action::take);
  l_.want(false);
  l_.on_take(lease_reply::done, t0_);
  EXPECT_EQ(l_.next(t0_), lease_action::release);
  l_.on_release(lease_reply::done);
  EXPECT_EQ(l_.state(), lease_state::idle);
}

}  // namespace
}  // namespace mailroom::cluster
