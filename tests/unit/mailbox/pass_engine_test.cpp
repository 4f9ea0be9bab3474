// The pass engine, event by event: every ordering of inbox answers, claims
// and delivery completions is written down, with no socket and no clock.
#include "mailbox/pass_engine.hpp"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <map>
#include <set>

namespace mailroom::mailbox {
namespace {

using kind = pass_action::kind;
using uids = std::vector<std::uint32_t>;
constexpr auto ok = delivery_outcome::delivered;
constexpr auto failed = delivery_outcome::failed;
const boost::system::error_code lost = make_error_code(boost::system::errc::connection_reset);

std::vector<message_size> sized(const uids& u, std::uint64_t size = 100) {
  std::vector<message_size> out;
  for (const auto uid : u) out.push_back({uid, size, false});
  return out;
}

std::vector<claim_answer> all(std::size_t n, claim_answer a = claim_answer::granted) {
  return std::vector<claim_answer>(n, a);
}

#define EXPECT_ACTION(engine, k, ...)        \
  do {                                       \
    const pass_action a_ = (engine).next();  \
    ASSERT_EQ(a_.what, k);                   \
    EXPECT_EQ(a_.uids, (uids{__VA_ARGS__})); \
  } while (0)

// One batch the simple way: sizes (100 bytes each), all claims granted, every
// body arrives and the fetch ends.
void take_batch(pass_engine& e, const uids& u) {
  const pass_action sizes = e.next();
  ASSERT_EQ(sizes.what, kind::fetch_sizes);
  ASSERT_EQ(sizes.uids, u);
  e.sizes_fetched({}, sized(u));
  const pass_action claim = e.next();
  ASSERT_EQ(claim.what, kind::claim);
  ASSERT_EQ(claim.uids, u);
  e.claimed(all(u.size()));
  const pass_action fetch = e.next();
  ASSERT_EQ(fetch.what, kind::fetch_bodies);
  ASSERT_EQ(fetch.uids, u);
  for (const auto uid : u) e.body_arrived(uid, 100);
  e.bodies_fetched({});
}

// A batch's finish when all went well: recorded, then flagged.
void record_and_flag(pass_engine& e, const uids& u) {
  const pass_action record = e.next();
  ASSERT_EQ(record.what, kind::record);
  ASSERT_EQ(record.uids, u);
  e.recorded();
  const pass_action flag = e.next();
  ASSERT_EQ(flag.what, kind::flag);
  ASSERT_EQ(flag.uids, u);
  e.flagged({});
}

// fetch_bytes 250, four messages of 100: batch 1 is {1, 2}, fetched and being
// delivered.
void two_of_four_in_250_bytes(pass_engine& e) {
  EXPECT_ACTION(e, kind::fetch_sizes, 1, 2, 3, 4);
  e.sizes_fetched({}, sized({1, 2, 3, 4}));
  // 100 + 100 fit in 250, a third does not.
  EXPECT_ACTION(e, kind::claim, 1, 2);
  e.claimed(all(2));
  EXPECT_ACTION(e, kind::fetch_bodies, 1, 2);
  e.body_arrived(1, 100);
  e.body_arrived(2, 100);
  e.bodies_fetched({});
}

pass_settings settings(std::size_t batch = 20, std::uint64_t bytes = 1 << 20) {
  pass_settings s;
  s.fetch_batch = batch;
  s.fetch_bytes = bytes;
  return s;
}

TEST(PassEngine, DeliversRecordsThenFlags) {
  pass_engine e(settings(), {1, 2, 3});
  EXPECT_ACTION(e, kind::fetch_sizes, 1, 2, 3);
  e.sizes_fetched({}, sized({1, 2, 3}));
  EXPECT_ACTION(e, kind::claim, 1, 2, 3);
  e.claimed(all(3));
  EXPECT_ACTION(e, kind::fetch_bodies, 1, 2, 3);
  EXPECT_EQ(e.body_arrived(1, 100), body_fate::deliver);
  EXPECT_EQ(e.body_arrived(2, 100), body_fate::deliver);
  EXPECT_EQ(e.body_arrived(3, 100), body_fate::deliver);
  e.bodies_fetched({});
  // Nothing is flagged before the target answered.
  EXPECT_ACTION(e, kind::wait);
  e.delivery_done(2, ok);
  e.delivery_done(1, ok);
  EXPECT_FALSE(e.wait_over());
  EXPECT_ACTION(e, kind::wait);
  e.delivery_done(3, ok);
  EXPECT_TRUE(e.wait_over());
  EXPECT_ACTION(e, kind::record, 2, 1, 3);
  e.recorded();
  EXPECT_ACTION(e, kind::flag, 1, 2, 3);
  e.flagged({});
  EXPECT_ACTION(e, kind::done);
  EXPECT_EQ(e.summary().delivered, 3u);
  EXPECT_FALSE(e.summary().delivery_failed);
  EXPECT_FALSE(e.summary().ec);
  EXPECT_EQ(e.summary().bytes_fetched, 300u);
}

TEST(PassEngine, NothingFoundIsAnEmptyPass) {
  pass_engine e(settings(), {});
  EXPECT_ACTION(e, kind::done);
}

TEST(PassEngine, BatchOneIsFlaggedAfterBatchTwoIsFetched) {
  pass_engine e(settings(2), {1, 2, 3, 4});
  take_batch(e, {1, 2});
  // A quick target: both acknowledged before the next batch is sized.
  e.delivery_done(1, ok);
  e.delivery_done(2, ok);
  take_batch(e, {3, 4});
  record_and_flag(e, {1, 2});
  EXPECT_ACTION(e, kind::wait);
  e.delivery_done(3, ok);
  e.delivery_done(4, ok);
  record_and_flag(e, {3, 4});
  EXPECT_ACTION(e, kind::done);
  EXPECT_EQ(e.summary().delivered, 4u);
}

TEST(PassEngine, SlowTargetHoldsTheCountBudget) {
  pass_engine e(settings(2), {1, 2, 3, 4});
  take_batch(e, {1, 2});
  EXPECT_ACTION(e, kind::fetch_sizes, 3, 4);
  e.sizes_fetched({}, sized({3, 4}));
  // Two deliveries still running fill fetch_batch: batch 1 is finished first.
  EXPECT_ACTION(e, kind::wait);
  const auto notes = e.take_notes();
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_EQ(notes[0].what, pass_note::kind::waiting_for_deliveries);
  EXPECT_EQ(notes[0].in_flight, 2u);
  EXPECT_EQ(notes[0].held_bytes, 200u);
  e.delivery_done(1, ok);
  EXPECT_ACTION(e, kind::wait);
  e.delivery_done(2, ok);
  record_and_flag(e, {1, 2});
  EXPECT_ACTION(e, kind::claim, 3, 4);
}

TEST(PassEngine, SlowTargetHoldsTheByteBudget) {
  pass_engine e(settings(20, 250), {1, 2, 3, 4});
  two_of_four_in_250_bytes(e);
  EXPECT_ACTION(e, kind::fetch_sizes, 3, 4);
  e.sizes_fetched({}, sized({3, 4}));
  // 200 bytes held, 100 more do not fit: wait for batch 1.
  EXPECT_ACTION(e, kind::wait);
  e.delivery_done(1, ok);
  e.delivery_done(2, ok);
  record_and_flag(e, {1, 2});
  EXPECT_ACTION(e, kind::claim, 3, 4);
}

TEST(PassEngine, HeldBytesShrinkTheNextBatch) {
  pass_engine e(settings(20, 250), {1, 2, 3, 4});
  two_of_four_in_250_bytes(e);
  e.delivery_done(1, ok);  // 100 bytes still held by 2
  EXPECT_ACTION(e, kind::fetch_sizes, 3, 4);
  e.sizes_fetched({}, sized({3, 4}));
  EXPECT_ACTION(e, kind::claim, 3);
}

TEST(PassEngine, OneLargeMessageAlwaysFits) {
  pass_engine e(settings(20, 100), {1});
  EXPECT_ACTION(e, kind::fetch_sizes, 1);
  e.sizes_fetched({}, sized({1}, 5000));
  EXPECT_ACTION(e, kind::claim, 1);
}

TEST(PassEngine, OversizeIsSetAsideNotFetched) {
  pass_settings s = settings();
  s.max_message_size = 1000;
  s.expunge_deleted = true;
  pass_engine e(s, {1, 2, 3});
  EXPECT_ACTION(e, kind::fetch_sizes, 1, 2, 3);
  e.sizes_fetched({}, {{1, 5000, false}, {2, 10, false}, {3, 5000, true}});
  // 3 was set aside before (flagged): not again.
  EXPECT_ACTION(e, kind::set_aside, 1);
  e.set_aside_done({}, /*left_deleted=*/true);
  EXPECT_ACTION(e, kind::claim, 2);
  e.claimed(all(1));
  EXPECT_ACTION(e, kind::fetch_bodies, 2);
  e.body_arrived(2, 10);
  e.bodies_fetched({});
  e.delivery_done(2, ok);
  record_and_flag(e, {2});
  // The copy left behind by COPY + \Deleted leaves with the pass's expunge.
  EXPECT_ACTION(e, kind::expunge, 1);
  e.expunged({});
  EXPECT_ACTION(e, kind::done);
}

TEST(PassEngine, DeleteAfterDeliveryExpungesWhatWasFlagged) {
  pass_settings s = settings();
  s.delete_after_delivery = true;
  s.expunge_deleted = true;
  pass_engine e(s, {1, 2});
  EXPECT_ACTION(e, kind::fetch_sizes, 1, 2);
  e.sizes_fetched({}, sized({1, 2}));
  EXPECT_ACTION(e, kind::claim, 1, 2);
  e.claimed({claim_answer::granted, claim_answer::delivered});
  EXPECT_ACTION(e, kind::fetch_bodies, 1);
  e.body_arrived(1, 100);
  e.bodies_fetched({});
  e.delivery_done(1, ok);
  EXPECT_ACTION(e, kind::record, 1);
  e.recorded();
  const pass_action flag = e.next();
  ASSERT_EQ(flag.what, kind::flag);
  EXPECT_EQ(flag.uids, (uids{1, 2}));
  EXPECT_TRUE(flag.delete_too);
  e.flagged({});
  EXPECT_ACTION(e, kind::expunge, 1, 2);
  e.expunged({});
  EXPECT_ACTION(e, kind::done);
  EXPECT_EQ(e.summary().delivered, 1u);
  EXPECT_EQ(e.summary().already_delivered, 1u);
}

TEST(PassEngine, ExpungedMeanwhileIsSkipped) {
  pass_engine e(settings(), {1, 2, 3});
  EXPECT_ACTION(e, kind::fetch_sizes, 1, 2, 3);
  e.sizes_fetched({}, sized({1, 3}));
  EXPECT_ACTION(e, kind::claim, 1, 3);
  e.claimed(all(2));
  EXPECT_ACTION(e, kind::fetch_bodies, 1, 3);
  e.body_arrived(1, 100);
  e.bodies_fetched({});  // 3 vanished between the size and the body
  e.delivery_done(1, ok);
  EXPECT_ACTION(e, kind::release, 3);
  e.released();
  EXPECT_ACTION(e, kind::record, 1);
}

TEST(PassEngine, ClaimsTakenElsewhereAreSkipped) {
  pass_engine e(settings(), {1, 2});
  EXPECT_ACTION(e, kind::fetch_sizes, 1, 2);
  e.sizes_fetched({}, sized({1, 2}));
  EXPECT_ACTION(e, kind::claim, 1, 2);
  e.claimed({claim_answer::taken, claim_answer::taken});
  EXPECT_ACTION(e, kind::done);
  EXPECT_TRUE(e.summary().claimed_elsewhere);
  EXPECT_FALSE(e.summary().delivery_failed);
}

TEST(PassEngine, StoreDownEndsThePassAfterTheBatch) {
  pass_engine e(settings(2), {1, 2, 3, 4});
  EXPECT_ACTION(e, kind::fetch_sizes, 1, 2);
  e.sizes_fetched({}, sized({1, 2}));
  EXPECT_ACTION(e, kind::claim, 1, 2);
  e.claimed({claim_answer::granted, claim_answer::unavailable});
  EXPECT_ACTION(e, kind::fetch_bodies, 1);
  e.body_arrived(1, 100);
  e.bodies_fetched({});
  e.delivery_done(1, ok);
  // No third claim while the store is failing; what was delivered is flagged.
  record_and_flag(e, {1});
  EXPECT_ACTION(e, kind::done);
  EXPECT_TRUE(e.summary().delivery_failed);
}

TEST(PassEngine, InFlightLimitQueuesInArrivalOrder) {
  pass_settings s = settings();
  s.max_deliveries_in_flight = 2;
  pass_engine e(s, {1, 2, 3, 4});
  EXPECT_ACTION(e, kind::fetch_sizes, 1, 2, 3, 4);
  e.sizes_fetched({}, sized({1, 2, 3, 4}));
  EXPECT_ACTION(e, kind::claim, 1, 2, 3, 4);
  e.claimed(all(4));
  EXPECT_ACTION(e, kind::fetch_bodies, 1, 2, 3, 4);
  EXPECT_EQ(e.body_arrived(1, 100), body_fate::deliver);
  EXPECT_EQ(e.body_arrived(2, 100), body_fate::deliver);
  EXPECT_EQ(e.body_arrived(3, 100), body_fate::queue);
  EXPECT_EQ(e.body_arrived(4, 100), body_fate::queue);
  EXPECT_EQ(e.deliveries_running(), 2u);
  auto o = e.delivery_done(2, ok);
  EXPECT_EQ(o.start, (uids{3}));
  EXPECT_TRUE(o.drop.empty());
  o = e.delivery_done(1, ok);
  EXPECT_EQ(o.start, (uids{4}));
  EXPECT_EQ(e.deliveries_running(), 2u);
}

TEST(PassEngine, AFailureStopsSendingAndEndsThePass) {
  pass_settings s = settings(20);
  s.max_deliveries_in_flight = 2;
  pass_engine e(s, {1, 2, 3, 4, 5});
  EXPECT_ACTION(e, kind::fetch_sizes, 1, 2, 3, 4, 5);
  e.sizes_fetched({}, sized({1, 2, 3, 4, 5}));
  EXPECT_ACTION(e, kind::claim, 1, 2, 3, 4, 5);
  e.claimed(all(5));
  EXPECT_ACTION(e, kind::fetch_bodies, 1, 2, 3, 4, 5);
  e.body_arrived(1, 100);
  e.body_arrived(2, 100);
  e.body_arrived(3, 100);
  // 1 fails: the queued 3 is not sent, 4 and 5 are not even queued.
  auto o = e.delivery_done(1, failed);
  EXPECT_TRUE(o.start.empty());
  EXPECT_EQ(o.drop, (uids{3}));
  EXPECT_EQ(e.body_arrived(4, 100), body_fate::drop);
  EXPECT_EQ(e.body_arrived(5, 100), body_fate::drop);
  e.bodies_fetched({});
  EXPECT_ACTION(e, kind::wait);  // 2 still running
  e.delivery_done(2, ok);
  EXPECT_ACTION(e, kind::release, 1, 3, 4, 5);
  e.released();
  record_and_flag(e, {2});
  EXPECT_ACTION(e, kind::done);
  EXPECT_TRUE(e.summary().delivery_failed);
  EXPECT_EQ(e.summary().delivered, 1u);
}

TEST(PassEngine, FailureWhileBatchesOverlap) {
  // Batch 1 is still being delivered when batch 2's first delivery fails.
  pass_engine e(settings(2), {1, 2, 3, 4, 5, 6});
  take_batch(e, {1, 2});
  e.delivery_done(1, ok);
  EXPECT_ACTION(e, kind::fetch_sizes, 3, 4);
  e.sizes_fetched({}, sized({3, 4}));
  EXPECT_ACTION(e, kind::claim, 3);  // 2 still holds one of the two places
  e.claimed(all(1));
  EXPECT_ACTION(e, kind::fetch_bodies, 3);
  e.body_arrived(3, 100);
  e.delivery_done(3, failed);
  e.bodies_fetched({});
  // Batch 1 is finished (2 still running), then batch 2, then the pass ends.
  EXPECT_ACTION(e, kind::wait);
  e.delivery_done(2, ok);
  record_and_flag(e, {1, 2});
  EXPECT_ACTION(e, kind::release, 3);
  e.released();
  EXPECT_ACTION(e, kind::done);
  EXPECT_TRUE(e.summary().delivery_failed);
  EXPECT_EQ(e.summary().delivered, 2u);
}

TEST(PassEngine, FailedFetchRecordsWhatWasDeliveredAndFlagsNothing) {
  pass_engine e(settings(2), {1, 2, 3, 4});
  take_batch(e, {1, 2});
  e.delivery_done(1, ok);
  e.delivery_done(2, ok);
  EXPECT_ACTION(e, kind::fetch_sizes, 3, 4);
  e.sizes_fetched({}, sized({3, 4}));
  EXPECT_ACTION(e, kind::claim, 3, 4);
  e.claimed(all(2));
  EXPECT_ACTION(e, kind::fetch_bodies, 3, 4);
  e.body_arrived(3, 100);
  e.bodies_fetched(lost);  // cut before 4 arrived
  EXPECT_ACTION(e, kind::record, 1, 2);
  e.recorded();
  // No flag on a lost connection: the next session finds the records.
  EXPECT_ACTION(e, kind::wait);
  e.delivery_done(3, ok);
  EXPECT_ACTION(e, kind::release, 4);
  e.released();
  EXPECT_ACTION(e, kind::record, 3);
  e.recorded();
  EXPECT_ACTION(e, kind::done);
  EXPECT_EQ(e.summary().ec, lost);
  EXPECT_EQ(e.summary().delivered, 0u);
}

TEST(PassEngine, FailedFlagEndsThePass) {
  pass_engine e(settings(1), {1, 2, 3});
  take_batch(e, {1});
  e.delivery_done(1, ok);
  take_batch(e, {2});
  EXPECT_ACTION(e, kind::record, 1);
  e.recorded();
  EXPECT_ACTION(e, kind::flag, 1);
  e.flagged(lost);
  // Batch 2 is recorded once acknowledged, not flagged; 3 is not looked at.
  EXPECT_ACTION(e, kind::wait);
  e.delivery_done(2, ok);
  EXPECT_ACTION(e, kind::record, 2);
  e.recorded();
  EXPECT_ACTION(e, kind::done);
  EXPECT_EQ(e.summary().ec, lost);
  EXPECT_EQ(e.summary().delivered, 0u);
}

TEST(PassEngine, FailedSizesEndThePass) {
  pass_engine e(settings(2), {1, 2, 3});
  take_batch(e, {1, 2});
  EXPECT_ACTION(e, kind::fetch_sizes, 3);
  e.sizes_fetched(lost, {});
  EXPECT_ACTION(e, kind::wait);
  e.delivery_done(1, ok);
  e.delivery_done(2, failed);
  EXPECT_ACTION(e, kind::release, 2);
  e.released();
  EXPECT_ACTION(e, kind::record, 1);
  e.recorded();
  EXPECT_ACTION(e, kind::done);
  EXPECT_EQ(e.summary().ec, lost);
  EXPECT_TRUE(e.summary().delivery_failed);
}

TEST(PassEngine, StopFinishesWhatRunsAndFetchesNothingMore) {
  pass_settings s = settings(2);
  s.max_deliveries_in_flight = 1;
  pass_engine e(s, {1, 2, 3, 4});
  EXPECT_ACTION(e, kind::fetch_sizes, 1, 2);
  e.sizes_fetched({}, sized({1, 2}));
  EXPECT_ACTION(e, kind::claim, 1, 2);
  e.claimed(all(2));
  EXPECT_ACTION(e, kind::fetch_bodies, 1, 2);
  EXPECT_EQ(e.body_arrived(1, 100), body_fate::deliver);
  EXPECT_EQ(e.body_arrived(2, 100), body_fate::queue);
  const auto o = e.stop();
  EXPECT_EQ(o.drop, (uids{2}));
  e.bodies_fetched({});
  EXPECT_ACTION(e, kind::wait);
  EXPECT_TRUE(e.delivery_done(1, ok).start.empty());
  EXPECT_ACTION(e, kind::release, 2);
  e.released();
  record_and_flag(e, {1});
  EXPECT_ACTION(e, kind::done);
  EXPECT_FALSE(e.summary().delivery_failed);
}

TEST(PassEngine, ADeliveryNotSentAfterAllIsReleased) {
  pass_engine e(settings(), {1, 2});
  EXPECT_ACTION(e, kind::fetch_sizes, 1, 2);
  e.sizes_fetched({}, sized({1, 2}));
  EXPECT_ACTION(e, kind::claim, 1, 2);
  e.claimed(all(2));
  EXPECT_ACTION(e, kind::fetch_bodies, 1, 2);
  EXPECT_EQ(e.body_arrived(1, 100), body_fate::deliver);
  EXPECT_EQ(e.body_arrived(2, 100), body_fate::deliver);
  // 1 fails before the runner got to send 2.
  e.delivery_done(1, failed);
  EXPECT_FALSE(e.may_send());
  e.delivery_done(2, delivery_outcome::not_sent);
  e.bodies_fetched({});
  EXPECT_ACTION(e, kind::release, 1, 2);
  e.released();
  EXPECT_ACTION(e, kind::done);
  EXPECT_TRUE(e.summary().delivery_failed);
}

TEST(PassEngine, UnaskedAndRepeatedBodiesAreIgnored) {
  pass_engine e(settings(), {1});
  EXPECT_ACTION(e, kind::fetch_sizes, 1);
  e.sizes_fetched({}, sized({1}));
  EXPECT_ACTION(e, kind::claim, 1);
  e.claimed(all(1));
  EXPECT_ACTION(e, kind::fetch_bodies, 1);
  EXPECT_EQ(e.body_arrived(7, 100), body_fate::drop);
  EXPECT_EQ(e.body_arrived(1, 100), body_fate::deliver);
  EXPECT_EQ(e.body_arrived(1, 100), body_fate::drop);
  EXPECT_TRUE(e.delivery_done(9, failed).drop.empty());  // never started: ignored
  EXPECT_FALSE(e.target_failed());
}

TEST(PassEngine, RefusedIsSetAsideAfterTheDeliveredAreFlaggedAndThePassGoesOn) {
  pass_engine e(settings(2), {1, 2, 3, 4});
  take_batch(e, {1, 2});
  e.delivery_done(1, ok);
  e.delivery_done(2, delivery_outcome::refused);
  EXPECT_FALSE(e.target_failed());
  // Not a failure of the target: the next batch is fetched.
  EXPECT_ACTION(e, kind::fetch_sizes, 3, 4);
  e.sizes_fetched({}, sized({3, 4}));
  EXPECT_ACTION(e, kind::claim, 3, 4);
  e.claimed(all(2));
  EXPECT_ACTION(e, kind::fetch_bodies, 3, 4);
  e.body_arrived(3, 100);
  e.body_arrived(4, 100);
  e.bodies_fetched({});
  // Batch 1: 1 recorded and flagged, then 2 set aside, then its claim released.
  record_and_flag(e, {1});
  const pass_action aside = e.next();
  ASSERT_EQ(aside.what, kind::set_aside);
  EXPECT_EQ(aside.uids, (uids{2}));
  EXPECT_EQ(aside.reason, aside_reason::refused);
  e.set_aside_done({}, false);
  EXPECT_ACTION(e, kind::release, 2);
  e.released();
  e.delivery_done(3, ok);
  e.delivery_done(4, ok);
  record_and_flag(e, {3, 4});
  EXPECT_ACTION(e, kind::done);
  EXPECT_EQ(e.summary().delivered, 3u);
  EXPECT_EQ(e.summary().refused, 1u);
  EXPECT_FALSE(e.summary().delivery_failed);
}

TEST(PassEngine, RefusedAloneIsSetAsideWithoutAFlag) {
  pass_engine e(settings(), {7});
  take_batch(e, {7});
  e.delivery_done(7, delivery_outcome::refused);
  const pass_action aside = e.next();
  ASSERT_EQ(aside.what, kind::set_aside);
  EXPECT_EQ(aside.reason, aside_reason::refused);
  e.set_aside_done({}, false);
  EXPECT_ACTION(e, kind::release, 7);
  e.released();
  EXPECT_ACTION(e, kind::done);
  EXPECT_EQ(e.summary().refused, 1u);
}

TEST(PassEngine, RefusedOnALostSessionIsOnlyReleased) {
  pass_engine e(settings(1), {1, 2});
  take_batch(e, {1});
  e.delivery_done(1, delivery_outcome::refused);
  EXPECT_ACTION(e, kind::fetch_sizes, 2);
  e.sizes_fetched(lost, {});
  // Nothing more is done on this session: 1 is left for the next pass.
  EXPECT_ACTION(e, kind::release, 1);
  e.released();
  EXPECT_ACTION(e, kind::done);
  EXPECT_EQ(e.summary().refused, 0u);
}

TEST(PassEngine, RefusedWhoseSetAsideFailsIsReleasedAndEndsThePass) {
  pass_engine e(settings(1), {1, 2});
  take_batch(e, {1});
  e.delivery_done(1, delivery_outcome::refused);
  EXPECT_ACTION(e, kind::fetch_sizes, 2);
  e.sizes_fetched({}, sized({2}));
  EXPECT_ACTION(e, kind::claim, 2);
  e.claimed(all(1));
  EXPECT_ACTION(e, kind::fetch_bodies, 2);
  e.bodies_fetched({});  // 2 expunged meanwhile
  EXPECT_ACTION(e, kind::set_aside, 1);
  e.set_aside_done(lost, false);
  EXPECT_ACTION(e, kind::release, 1);
  e.released();
  EXPECT_ACTION(e, kind::release, 2);  // the unfetched one of the last batch
  e.released();
  EXPECT_ACTION(e, kind::done);
  EXPECT_EQ(e.summary().ec, lost);
}

TEST(PassEngine, TooOldIsSetAsideNotFetched) {
  pass_settings s = settings();
  s.oldest_arrival = 1000;
  s.max_message_size = 1000;
  pass_engine e(s, {1, 2, 3, 4, 5, 6, 7});
  EXPECT_ACTION(e, kind::fetch_sizes, 1, 2, 3, 4, 5, 6, 7);
  std::vector<message_size> m = sized({1, 2, 3, 4, 5, 6, 7});
  m[0].arrived = 999;   // too old
  m[1].arrived = 1000;  // just young enough
  m[2].arrived = 0;     // unknown: never too old
  m[3].arrived = 5;
  m[3].age_exempt = true;  // reingested
  m[4].arrived = 5;
  m[4].flagged_too_old = true;  // set aside before: skipped
  m[5].rejected = true;         // refused before: skipped
  m[6].arrived = 5;
  m[6].size = 5000;  // too old and too large: set aside for its size
  e.sizes_fetched({}, m);
  pass_action a = e.next();
  ASSERT_EQ(a.what, kind::set_aside);
  EXPECT_EQ(a.reason, aside_reason::oversize);
  EXPECT_EQ(a.uids, (uids{7}));
  e.set_aside_done({}, false);
  a = e.next();
  ASSERT_EQ(a.what, kind::set_aside);
  EXPECT_EQ(a.reason, aside_reason::too_old);
  EXPECT_EQ(a.uids, (uids{1}));
  e.set_aside_done({}, false);
  EXPECT_ACTION(e, kind::claim, 2, 3, 4);
}

// Any pass, any answers, any order of completions: the guarantees hold.
RC_GTEST_PROP(PassEngineProperty, GuaranteesHoldInEveryOrdering, ()) {
  const auto n = *rc::gen::inRange<std::uint32_t>(0, 40);
  pass_settings s;
  s.fetch_batch = *rc::gen::inRange<std::size_t>(1, 8);
  s.fetch_bytes = *rc::gen::inRange<std::uint64_t>(50, 2000);
  s.max_message_size = *rc::gen::inRange<std::uint64_t>(100, 1500);
  s.max_deliveries_in_flight = *rc::gen::inRange<std::size_t>(1, 6);
  s.delete_after_delivery = *rc::gen::arbitrary<bool>();
  s.expunge_deleted = *rc::gen::arbitrary<bool>();
  uids all_uids;
  std::map<std::uint32_t, std::uint64_t> size;
  for (std::uint32_t i = 1; i <= n; ++i) {
    all_uids.push_back(i);
    size[i] = *rc::gen::inRange<std::uint64_t>(1, 1200);
  }
  pass_engine e(s, all_uids);

  std::vector<std::uint32_t> running;  // started, not completed
  std::vector<std::uint32_t> queued;
  std::set<std::uint32_t> sent, acked, recorded, flagged, already, taken, refused, aside_refused,
      released;
  std::uint64_t held = 0;
  std::map<std::uint32_t, std::uint64_t> held_by;
  const auto complete_one = [&] {
    const auto i = *rc::gen::inRange<std::size_t>(0, running.size());
    const auto uid = running[i];
    running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
    const auto outcome = *rc::gen::weightedElement<delivery_outcome>(
        {{8, ok}, {1, failed}, {1, delivery_outcome::refused}});
    if (outcome == ok) acked.insert(uid);
    if (outcome == delivery_outcome::refused) refused.insert(uid);
    held -= held_by[uid];
    const auto o = e.delivery_done(uid, outcome);
    for (const auto d : o.drop) {
      held -= held_by[d];
      queued.erase(std::find(queued.begin(), queued.end(), d));
    }
    for (const auto st : o.start) {
      RC_ASSERT(!queued.empty() && queued.front() == st);  // arrival order
      queued.erase(queued.begin());
      running.push_back(st);
      RC_ASSERT(sent.insert(st).second);  // never sent twice
    }
    RC_ASSERT(running.size() <= s.max_deliveries_in_flight);
  };

  for (int steps = 0; steps < 10000; ++steps) {
    const pass_action a = e.next();
    if (a.what == kind::done) break;
    switch (a.what) {
      case kind::wait:
        RC_ASSERT(!running.empty());
        complete_one();
        // A runner sleeps on until wait_over(): it must not miss a change.
        while (!e.wait_over()) {
          RC_ASSERT(e.next().what == kind::wait);
          RC_ASSERT(!running.empty());
          complete_one();
        }
        break;
      case kind::fetch_sizes:
        e.sizes_fetched({}, [&] {
          std::vector<message_size> out;
          for (const auto uid : a.uids) out.push_back({uid, size[uid], false});
          return out;
        }());
        break;
      case kind::set_aside:
        for (const auto uid : a.uids) {
          if (a.reason == aside_reason::refused) {
            // Only a refused one, once, and before its claim is released.
            RC_ASSERT(refused.count(uid) > 0 && !released.count(uid));
            RC_ASSERT(aside_refused.insert(uid).second);
          } else {
            RC_ASSERT(a.reason == aside_reason::oversize && size[uid] > s.max_message_size);
          }
        }
        e.set_aside_done({}, false);
        break;
      case kind::claim: {
        std::uint64_t bytes = 0;
        for (const auto uid : a.uids) bytes += size[uid];
        // A batch fits the budget beside what is held, or is one message.
        // and beside the deliveries still running or queued (fetch_batch).
        if (a.uids.size() > 1) {
          RC_ASSERT(bytes + held <= s.fetch_bytes);
          RC_ASSERT(a.uids.size() + running.size() + queued.size() <= s.fetch_batch);
        }
        std::vector<claim_answer> answers;
        for (const auto uid : a.uids) {
          const auto c = *rc::gen::weightedElement<claim_answer>(
              {{8, claim_answer::granted}, {1, claim_answer::taken}, {1, claim_answer::delivered}});
          if (c == claim_answer::delivered) already.insert(uid);
          if (c == claim_answer::taken) taken.insert(uid);
          answers.push_back(c);
        }
        e.claimed(answers);
        break;
      }
      case kind::fetch_bodies:
        for (const auto uid : a.uids) {
          // Completions interleave with the arrival of bodies.
          while (!running.empty() && *rc::gen::arbitrary<bool>()) complete_one();
          const auto fate = e.body_arrived(uid, size[uid]);
          if (fate == body_fate::drop) continue;
          held += size[uid];
          held_by[uid] = size[uid];
          if (fate == body_fate::deliver) {
            running.push_back(uid);
            RC_ASSERT(sent.insert(uid).second);
          } else {
            queued.push_back(uid);
          }
          RC_ASSERT(running.size() <= s.max_deliveries_in_flight);
        }
        e.bodies_fetched({});
        break;
      case kind::release:
        for (const auto uid : a.uids) {
          RC_ASSERT(!acked.count(uid));
          released.insert(uid);
        }
        e.released();
        break;
      case kind::record:
        for (const auto uid : a.uids) {
          RC_ASSERT(acked.count(uid) > 0);
          recorded.insert(uid);
        }
        e.recorded();
        break;
      case kind::flag:
        for (const auto uid : a.uids) {
          // Flagged only once acknowledged and recorded, or found recorded.
          RC_ASSERT((acked.count(uid) && recorded.count(uid)) || already.count(uid));
          RC_ASSERT(!refused.count(uid));
          RC_ASSERT(flagged.insert(uid).second);
        }
        e.flagged({});
        break;
      case kind::expunge:
        RC_ASSERT(s.expunge_deleted);
        e.expunged({});
        break;
      case kind::done:
        break;
    }
  }
  RC_ASSERT(e.next().what == kind::done);
  RC_ASSERT(running.empty());
  RC_ASSERT(queued.empty());
  // The inbox never failed here: every acknowledged message was recorded and
  // flagged, and a pass without a failed delivery took every message.
  for (const auto uid : acked) {
    RC_ASSERT(recorded.count(uid) > 0);
    RC_ASSERT(flagged.count(uid) > 0);
  }
  RC_ASSERT(e.summary().delivered == acked.size());
  RC_ASSERT(!e.summary().ec);
  // A refused message is set aside and its claim released; it never stops the pass.
  RC_ASSERT(aside_refused == refused);
  for (const auto uid : refused) RC_ASSERT(released.count(uid) > 0);
  RC_ASSERT(e.summary().refused == refused.size());
  if (!e.summary().delivery_failed && n > 0) {
    std::set<std::uint32_t> handled;  // delivered, found delivered, or too large
    for (const auto uid : all_uids)
      if (acked.count(uid) || already.count(uid) || refused.count(uid) ||
          size[uid] > s.max_message_size)
        handled.insert(uid);
    RC_ASSERT(handled.size() + taken.size() == all_uids.size());
  }
}

}  // namespace
}  // namespace mailroom::mailbox
