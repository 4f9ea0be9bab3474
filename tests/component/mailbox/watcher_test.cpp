// mailbox::watcher against a scripted IMAP server, with a programmable
// deliverer and arbitrator: the exact IMAP command sequence of each pass, what
// is delivered, claimed, released and flagged, reconnects and shutdown.
#include "mailbox/imap_watcher.hpp"

#include "common/unix_time.hpp"
#include "delivery/job.hpp"

#include "arbitration/noop_arbitrator.hpp"
#include "component/mailbox/fakes.hpp"
#include "support/async_test.hpp"
#include "support/fake_imap_server.hpp"
#include "support/log_recorder.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace mailroom::mailbox {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using arbitration::claim_result;
using test::async_flag;
using test::fake_arbitrator;
using test::fake_deliverer;
using test::fake_imap_server;
using test::imap_script;
using lines = std::vector<std::string>;
using uid_list = std::vector<std::uint32_t>;
using clock_type = std::chrono::steady_clock;

constexpr const char* kPassword = "s3cret-pw";
const std::string kCaps = "IMAP4rev1 IDLE UIDPLUS";
constexpr std::uint32_t kUidValidity = 42;

std::string body_of(std::uint32_t uid) {
  return "Message-ID: <" + std::to_string(uid) + "@example.org>\r\nSubject: message " +
         std::to_string(uid) + "\r\n\r\nbody ) of " + std::to_string(uid) + "\r\n";
}

// Greeting, LOGIN, SELECT INBOX (UIDVALIDITY 42).
imap_script session_start(const std::string& caps = kCaps) {
  imap_script s;
  s.line("* OK [CAPABILITY " + caps + "] fake ready")
      .expect(R"(^(\S+) LOGIN incoming@example\.com s3cret-pw$)")
      .tagged("OK [CAPABILITY " + caps + "] Logged in")
      .expect(R"(^(\S+) SELECT INBOX$)")
      .line("* 3 EXISTS")
      .line("* OK [UIDVALIDITY " + std::to_string(kUidValidity) + "] UIDs valid")
      .tagged("OK [READ-WRITE] Select completed")
      // expunge_deleted: leftovers of an earlier session are expunged first.
      .expect(R"(^(\S+) UID SEARCH DELETED$)")
      .line("* SEARCH")
      .tagged("OK Search completed");
  return s;
}

std::string body_of(std::uint32_t uid);

// "1 2 3 7" -> "1:3,7" (consecutive runs, as the client compresses UID sets).
std::string uid_set(const std::vector<std::uint32_t>& uids) {
  std::string out;
  for (std::size_t i = 0; i < uids.size();) {
    std::size_t j = i;
    while (j + 1 < uids.size() && uids[j + 1] == uids[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(uids[i]);
    if (j > i) out += ":" + std::to_string(uids[j]);
    i = j + 1;
  }
  return out;
}

// What the fake server answers for INTERNALDATE: 2026-12-05 10:00:00 UTC.
constexpr const char* kInternalDate = "05-Dec-2026 10:00:00 +0000";
constexpr std::int64_t kArrival = 1796464800;

// UID FETCH <set> (UID RFC822.SIZE FLAGS INTERNALDATE): the sizes asked
// before claiming (INTERNALDATE: the delivery latency starts there).
void meta(imap_script& s, const std::vector<std::uint32_t>& uids,
          const std::string& extra_flags = "") {
  std::string r;
  std::uint32_t seq = 1;
  for (const auto uid : uids) {
    r += "* " + std::to_string(seq++) + " FETCH (UID " + std::to_string(uid) + " RFC822.SIZE " +
         std::to_string(body_of(uid).size()) + " FLAGS (" + extra_flags + ") INTERNALDATE \"" +
         kInternalDate + "\")\r\n";
  }
  s.expect(R"(^(\S+) UID FETCH )" + uid_set(uids) + R"( \(UID RFC822\.SIZE FLAGS INTERNALDATE\)$)")
      .send(r)
      .tagged("OK Fetch completed");
}

// After each pass: UID SEARCH UNSEEN answered with `uids`, then, when there
// are any, the arrival of the oldest (the lowest UID).
void unseen(imap_script& s, const std::string& uids = "") {
  s.expect(R"(^(\S+) UID SEARCH UNSEEN$)")
      .line(uids.empty() ? "* SEARCH" : "* SEARCH " + uids)
      .tagged("OK Search completed");
  std::istringstream in(uids);
  std::uint32_t lowest = 0;
  for (std::uint32_t u; in >> u;)
    if (lowest == 0 || u < lowest) lowest = u;
  if (lowest == 0) return;
  s.expect(R"(^(\S+) UID FETCH )" + std::to_string(lowest) +
           R"( \(UID RFC822\.SIZE FLAGS INTERNALDATE\)$)")
      .line("* 1 FETCH (UID " + std::to_string(lowest) + " RFC822.SIZE " +
            std::to_string(body_of(lowest).size()) + " FLAGS () INTERNALDATE \"" + kInternalDate +
            "\")")
      .tagged("OK Fetch completed");
}

// UID SEARCH UNSEEN answered with `uids`, then the size query of the first
// batch (up to `batch` UIDs) when there are any.
void search(imap_script& s, const std::string& uids, std::size_t batch = 20) {
  s.expect(R"(^(\S+) UID SEARCH UNSEEN UNKEYWORD \$MailroomRejected$)")
      .line(uids.empty() ? "* SEARCH" : "* SEARCH " + uids)
      .tagged("OK Search completed");
  std::vector<std::uint32_t> list;
  std::istringstream in(uids);
  for (std::uint32_t u; in >> u;) list.push_back(u);
  if (list.size() > batch) list.resize(batch);
  if (!list.empty()) meta(s, list);
}

std::string fetch_response(const uid_list& uids) {
  std::string r;
  std::uint32_t seq = 1;
  for (const auto uid : uids) {
    r += "* " + std::to_string(seq++) + " FETCH (UID " + std::to_string(uid) + " BODY[] " +
         imap_script::literal(body_of(uid)) + ")\r\n";
  }
  return r;
}

// UID sets contain only digits, ':' and ',', none of them special in a regex.
void fetch(imap_script& s, const std::string& set, const uid_list& uids) {
  s.expect(R"(^(\S+) UID FETCH )" + set + R"( \(UID BODY\.PEEK\[\]\)$)")
      .send(fetch_response(uids))
      .tagged("OK Fetch completed");
}

void store(imap_script& s, const std::string& set,
           const std::string& flags = R"(\\Seen \\Deleted)") {
  s.expect(R"(^(\S+) UID STORE )" + set + R"( \+FLAGS\.SILENT \()" + flags + R"(\)$)")
      .tagged("OK Store completed");
}

void expunge(imap_script& s, const std::string& set) {
  s.expect(R"(^(\S+) UID EXPUNGE )" + set + "$").tagged("OK Expunge completed");
}

// IDLE that the client ends itself (timeout or retry backoff).
void idle_until_done(imap_script& s) {
  s.expect(R"(^(\S+) IDLE$)").line("+ idling").expect("^DONE$").tagged("OK IDLE terminated");
}

// IDLE, then the test stops the watcher: DONE, LOGOUT, close.
void idle_until_stopped(imap_script& s, const async_flag& stop) {
  s.expect(R"(^(\S+) IDLE$)")
      .line("+ idling")
      .call([stop] { stop.set(); })
      .expect("^DONE$")
      .tagged("OK IDLE terminated")
      .expect(R"(^(\S+) LOGOUT$)")
      .line("* BYE Logging out")
      .tagged("OK Logout completed")
      .expect_eof();
}

long long now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now().time_since_epoch())
      .count();
}

class WatcherTest : public ::testing::Test {
 protected:
  WatcherTest() {
    mb_.email = "incoming@example.com";
    mb_.password = secret(kPassword);
    mb_.name = "INBOX";
    mb_.host = "127.0.0.1";
    mb_.port = server_.port();
    mb_.ssl.enabled = false;
    mb_.allow_plaintext_login = true;
    // Long, so that a test finishing quickly shows the watcher did not wait for it.
    mb_.idle_timeout = 30s;
    mb_.after_delivery = config::after_delivery_action::remove;
    mb_.expunge_deleted = true;
    opts_.imap.connect_timeout = 5s;
    opts_.imap.command_timeout = 5s;
    opts_.imap.logout_timeout = 2s;
    opts_.reconnect_min = 50ms;
    opts_.reconnect_max = 200ms;
    opts_.retry_min = 50ms;
    opts_.retry_max = 200ms;
  }

  // Runs the watcher until run() returns (at most `limit`); the stop_ flag,
  // raised by a script, calls stop().
  void run_watcher(std::chrono::milliseconds limit = 10s) {
    std::shared_ptr<arbitration::arbitrator> arb = arbitrator_;
    if (noop_arbitration_) arb = std::make_shared<arbitration::noop_arbitrator>();
    imap_watcher w(io_.get_executor(), mb_, deliverer_, arb, log_.logger(), opts_);
    bool returned = false;
    clock_type::time_point stop_called{}, run_returned{};
    asio::co_spawn(
        io_,
        [&]() -> asio::awaitable<void> {
          co_await stop_.wait();
          if (stop_in_backoff_) {
            // Poll the watcher's state on the loop until it waits to reconnect.
            asio::steady_timer poll(io_);
            while (!returned && w.state() != watcher_state::backing_off) {
              poll.expires_after(5ms);
              co_await poll.async_wait(asio::use_awaitable);
            }
          }
          if (returned) co_return;
          stop_called = clock_type::now();
          w.stop();
          stop_taken_ = true;
          // A delivery held at the target answers only once stop() was taken.
          if (release_on_stop_) deliverer_->release();
        },
        asio::detached);
    auto body = [&]() -> asio::awaitable<void> {
      const std::function<void(const fatal_error&)> on_fatal = [this](const fatal_error& f) {
        fatals_.push_back(f);
      };
      co_await w.run(on_fatal);
      returned = true;
      run_returned = clock_type::now();
      stop_.set();  // releases the stop waiter if no script raised it
    };
    const auto r = test::run_bounded(io_, body(), limit);
    elapsed_ = r.elapsed;
    if (!r.finished) {
      ADD_FAILURE() << "watcher::run() did not return within " << limit.count() << " ms";
      w.abort();
      stop_.set();
      io_.restart();
      io_.run_for(2s);
    }
    if (r.failure) {
      try {
        std::rethrow_exception(r.failure);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "exception: " << e.what();
      }
    }
    if (stop_called != clock_type::time_point{} && returned) {
      stop_latency_ =
          std::chrono::duration_cast<std::chrono::milliseconds>(run_returned - stop_called);
    }
    delivered_count_ = w.delivered_count();
    counters_ = w.counters();
    health_ = w.health();
    EXPECT_TRUE(server_.wait_closed()) << "the server still holds a connection";
    EXPECT_EQ(server_.errors(), lines{});
  }

  // Records when the server sent the answer just before: a pass ends after
  // its last answer arrived, so a wait that begins with the pass's end ends
  // no earlier than this plus the wait (timers never fire early).
  void answered(imap_script& s) {
    s.call([this] { answered_ms_ = now_ms(); });
  }

  // Waits until the target has acknowledged `n` deliveries. Its completion
  // is handled on the watcher's thread before anything the server sends
  // next, so the watcher sees nothing held when it reads the next answer.
  void acknowledged(imap_script& s, int n) {
    s.wait_for([d = deliverer_, n] { return d->acknowledged >= n; },
               std::to_string(n) + " acknowledged deliveries");
  }

  // Once the watcher logged that it waits for the deliveries still running
  // (its decision taken), the held target answers.
  void release_after_wait_decision(imap_script& s) {
    s.wait_for([this] { return log_.count("waiting for deliveries before fetching more") >= 1; },
               "the watcher to wait for the deliveries still running")
        .call([d = deliverer_] { d->release(); });
  }

  // The backoffs the watcher announced ("waiting to retry delivery"), in ms.
  std::vector<long long> backoffs() const {
    std::vector<long long> out;
    for (const auto& j : log_.lines("waiting to retry delivery")) out.push_back(j["backoff_ms"]);
    return out;
  }

  // IDLE that the client ends itself; records when it began and when DONE came.
  void idle_timed(imap_script& s) {
    s.expect(R"(^(\S+) IDLE$)")
        .call([this] { idle_started_ms_ = now_ms(); })
        .line("+ idling")
        .expect("^DONE$")
        .call([this] { idle_done_ms_ = now_ms(); })
        .tagged("OK IDLE terminated");
  }

  // Declared before the server: its threads post to the io_context and read
  // the log.
  test::log_recorder log_;
  asio::io_context io_;
  async_flag stop_{io_.get_executor()};
  std::atomic<int> acknowledged_at_store_{-1};
  std::atomic<long long> idle_started_ms_{0};
  std::atomic<int> marked_at_store_{-1};
  std::atomic<long long> idle_done_ms_{0};
  fake_imap_server server_;
  config::mailbox mb_;
  watcher_options opts_;
  std::shared_ptr<fake_deliverer> deliverer_ = std::make_shared<fake_deliverer>();
  std::shared_ptr<fake_arbitrator> arbitrator_ = std::make_shared<fake_arbitrator>();
  std::vector<fatal_error> fatals_;
  std::chrono::milliseconds elapsed_{0};
  std::chrono::milliseconds stop_latency_{-1};
  bool stop_in_backoff_ = false;           // stop only once the watcher is backing off
  bool release_on_stop_ = false;           // release held deliveries right after stop()
  bool noop_arbitration_ = false;          // mail_room's default instead of arbitrator_
  std::atomic<bool> stop_taken_{false};    // stop() has been called
  std::atomic<long long> answered_ms_{0};  // see answered()
  std::uint64_t delivered_count_ = 0;
  watcher_counters counters_;
  std::optional<watcher_health> health_;  // as run() left it
};

TEST_F(WatcherTest, DeliversUnseenMessagesThenFlagsExpungesAndIdles) {
  imap_script s = session_start();
  search(s, "1 2 3");
  fetch(s, "1:3", {1, 2, 3});
  s.expect(R"(^(\S+) UID STORE 1:3 \+FLAGS\.SILENT \(\\Seen \\Deleted\)$)")
      .call([d = deliverer_, this] { acknowledged_at_store_ = d->acknowledged.load(); })
      .tagged("OK Store completed");
  expunge(s, "1:3");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(server_.transcript(0), (lines{
                                       "A0001 LOGIN incoming@example.com s3cret-pw",
                                       "A0002 SELECT INBOX",
                                       "A0003 UID SEARCH DELETED",
                                       "A0004 UID SEARCH UNSEEN UNKEYWORD $MailroomRejected",
                                       "A0005 UID FETCH 1:3 (UID RFC822.SIZE FLAGS INTERNALDATE)",
                                       "A0006 UID FETCH 1:3 (UID BODY.PEEK[])",
                                       R"(A0007 UID STORE 1:3 +FLAGS.SILENT (\Seen \Deleted))",
                                       "A0008 UID EXPUNGE 1:3",
                                       "A0009 UID SEARCH UNSEEN",
                                       "A0010 IDLE",
                                       "DONE",
                                       "A0011 LOGOUT",
                                   }));
  EXPECT_EQ(fake_arbitrator::uids(arbitrator_->claims), (uid_list{1, 2, 3}));
  for (const auto& c : arbitrator_->claims) {
    EXPECT_EQ(c.mailbox_email, "incoming@example.com");
    EXPECT_EQ(c.mailbox_name, "INBOX");
    EXPECT_EQ(c.uidvalidity, kUidValidity);
  }
  EXPECT_TRUE(arbitrator_->releases.empty());
  ASSERT_EQ(deliverer_->attempts.size(), 3u);
  for (std::uint32_t i = 0; i < 3; ++i) {
    const auto& m = deliverer_->attempts[i].message;
    EXPECT_EQ(m.uid, i + 1);
    EXPECT_EQ(m.body, body_of(i + 1));
    EXPECT_EQ(m.mailbox_email, "incoming@example.com");
    EXPECT_EQ(m.mailbox_name, "INBOX");
    EXPECT_EQ(m.uidvalidity, kUidValidity);
  }
  EXPECT_EQ(acknowledged_at_store_.load(), 3) << "UID STORE before every delivery was acknowledged";
  EXPECT_EQ(delivered_count_, 3u);
  EXPECT_TRUE(fatals_.empty());
  // /metrics: one latency (from INTERNALDATE) and one response time per
  // delivery, the bytes fetched, and nothing unseen after the pass.
  ASSERT_TRUE(health_);
  EXPECT_EQ(health_->delivery_latency.count(), 3u);
  EXPECT_GE(health_->delivery_latency.sum(), 3.0 * (unix_seconds() - kArrival - 5));
  EXPECT_EQ(health_->target_response.count(), 3u);
  EXPECT_EQ(counters_.bytes_fetched, body_of(1).size() + body_of(2).size() + body_of(3).size());
  EXPECT_EQ(health_->unseen.messages, 0u);
  EXPECT_GT(health_->unseen.counted_at, 0);
}

TEST_F(WatcherTest, WithoutDeleteOnlySeenIsStoredAndNothingExpunged) {
  mb_.after_delivery = config::after_delivery_action::seen;
  imap_script s = session_start();
  search(s, "4");
  fetch(s, "4", {4});
  store(s, "4", R"(\\Seen)");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(server_.transcript(0), (lines{
                                       "A0001 LOGIN incoming@example.com s3cret-pw",
                                       "A0002 SELECT INBOX",
                                       "A0003 UID SEARCH DELETED",
                                       "A0004 UID SEARCH UNSEEN UNKEYWORD $MailroomRejected",
                                       "A0005 UID FETCH 4 (UID RFC822.SIZE FLAGS INTERNALDATE)",
                                       "A0006 UID FETCH 4 (UID BODY.PEEK[])",
                                       R"(A0007 UID STORE 4 +FLAGS.SILENT (\Seen))",
                                       "A0008 UID SEARCH UNSEEN",
                                       "A0009 IDLE",
                                       "DONE",
                                       "A0010 LOGOUT",
                                   }));
  EXPECT_EQ(deliverer_->delivered_uids(), uid_list{4});
}

TEST_F(WatcherTest, MessageClaimedElsewhereIsNeitherFetchedNorFlagged) {
  arbitrator_->answer_for(2, claim_result::taken);
  imap_script s = session_start();
  search(s, "1 2 3");
  fetch(s, "1,3", {1, 3});
  store(s, "1,3");
  expunge(s, "1,3");
  unseen(s, "2");  // claimed by another instance: still unseen
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(server_.transcript(0), (lines{
                                       "A0001 LOGIN incoming@example.com s3cret-pw",
                                       "A0002 SELECT INBOX",
                                       "A0003 UID SEARCH DELETED",
                                       "A0004 UID SEARCH UNSEEN UNKEYWORD $MailroomRejected",
                                       "A0005 UID FETCH 1:3 (UID RFC822.SIZE FLAGS INTERNALDATE)",
                                       "A0006 UID FETCH 1,3 (UID BODY.PEEK[])",
                                       R"(A0007 UID STORE 1,3 +FLAGS.SILENT (\Seen \Deleted))",
                                       "A0008 UID EXPUNGE 1,3",
                                       "A0009 UID SEARCH UNSEEN",
                                       "A0010 UID FETCH 2 (UID RFC822.SIZE FLAGS INTERNALDATE)",
                                       "A0011 IDLE",
                                       "DONE",
                                       "A0012 LOGOUT",
                                   }));
  EXPECT_EQ(fake_arbitrator::uids(arbitrator_->claims), (uid_list{1, 2, 3}));
  EXPECT_TRUE(arbitrator_->releases.empty()) << "a claim we did not get is not ours to release";
  EXPECT_EQ(deliverer_->attempted_uids(), (uid_list{1, 3}));
  // Still unseen, and the oldest unseen is the one the count found.
  ASSERT_TRUE(health_);
  EXPECT_EQ(health_->unseen.messages, 1u);
  EXPECT_EQ(health_->unseen.oldest_arrival, kArrival);
}

TEST_F(WatcherTest, BatchWhollyClaimedElsewhereIsSkippedAndTheWatcherIdles) {
  // Another instance holds every message: nothing to fetch or deliver.
  arbitrator_->answer_next(2, claim_result::taken);
  imap_script s = session_start();
  search(s, "5 6");
  unseen(s, "5 6");
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher(5s);

  EXPECT_EQ(server_.transcript(0), (lines{
                                       "A0001 LOGIN incoming@example.com s3cret-pw",
                                       "A0002 SELECT INBOX",
                                       "A0003 UID SEARCH DELETED",
                                       "A0004 UID SEARCH UNSEEN UNKEYWORD $MailroomRejected",
                                       "A0005 UID FETCH 5:6 (UID RFC822.SIZE FLAGS INTERNALDATE)",
                                       "A0006 UID SEARCH UNSEEN",
                                       "A0007 UID FETCH 5 (UID RFC822.SIZE FLAGS INTERNALDATE)",
                                       "A0008 IDLE",
                                       "DONE",
                                       "A0009 LOGOUT",
                                   }));
  EXPECT_EQ(fake_arbitrator::uids(arbitrator_->claims), (uid_list{5, 6}));
  EXPECT_TRUE(deliverer_->attempts.empty());
}

TEST_F(WatcherTest, FailedDeliveryIsLeftUnseenReleasedAndRetriedAfterBackoff) {
  // 2 fails: the target is failing, so 3, not yet sent, is not sent in this
  // pass either. 1 is flagged; 2 and 3 stay unseen, their claims are given
  // back, and the next pass comes after the backoff (not the 30 s
  // idle_timeout, which would outlast the run).
  deliverer_->fail_next(2, delivery::errc::target_unavailable);
  imap_script s = session_start();
  search(s, "1 2 3");
  fetch(s, "1:3", {1, 2, 3});
  store(s, "1");
  expunge(s, "1");
  unseen(s, "2 3");
  answered(s);
  idle_timed(s);
  search(s, "2 3");
  fetch(s, "2:3", {2, 3});
  store(s, "2:3");
  expunge(s, "2:3");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(server_.transcript(0), (lines{
                                       "A0001 LOGIN incoming@example.com s3cret-pw",
                                       "A0002 SELECT INBOX",
                                       "A0003 UID SEARCH DELETED",
                                       "A0004 UID SEARCH UNSEEN UNKEYWORD $MailroomRejected",
                                       "A0005 UID FETCH 1:3 (UID RFC822.SIZE FLAGS INTERNALDATE)",
                                       "A0006 UID FETCH 1:3 (UID BODY.PEEK[])",
                                       R"(A0007 UID STORE 1 +FLAGS.SILENT (\Seen \Deleted))",
                                       "A0008 UID EXPUNGE 1",
                                       "A0009 UID SEARCH UNSEEN",
                                       "A0010 UID FETCH 2 (UID RFC822.SIZE FLAGS INTERNALDATE)",
                                       "A0011 IDLE",
                                       "DONE",
                                       "A0012 UID SEARCH UNSEEN UNKEYWORD $MailroomRejected",
                                       "A0013 UID FETCH 2:3 (UID RFC822.SIZE FLAGS INTERNALDATE)",
                                       "A0014 UID FETCH 2:3 (UID BODY.PEEK[])",
                                       R"(A0015 UID STORE 2:3 +FLAGS.SILENT (\Seen \Deleted))",
                                       "A0016 UID EXPUNGE 2:3",
                                       "A0017 UID SEARCH UNSEEN",
                                       "A0018 IDLE",
                                       "DONE",
                                       "A0019 LOGOUT",
                                   }));
  EXPECT_EQ(deliverer_->attempted_uids(), (uid_list{1, 2, 2, 3}));
  EXPECT_EQ(deliverer_->delivered_uids(), (uid_list{1, 2, 3})) << "each delivered exactly once";
  EXPECT_EQ(fake_arbitrator::uids(arbitrator_->claims), (uid_list{1, 2, 3, 2, 3}));
  EXPECT_EQ(fake_arbitrator::uids(arbitrator_->releases), (uid_list{2, 3}));
  EXPECT_EQ(delivered_count_, 3u);
  EXPECT_EQ(counters_.delivery_failures, 1u) << "3 was never sent: not a failure";
  // 1 was delivered in the failed pass, so the backoff is the first step.
  EXPECT_EQ(backoffs(), (std::vector<long long>{50}));
  EXPECT_GE(idle_done_ms_.load() - answered_ms_.load(), 50) << "retried before the backoff";
}

// A pass that failed ends in a backoff; mail arriving meanwhile does not
// start a pass before it has elapsed (it would fail the same way).
TEST_F(WatcherTest, NewMailDuringTheBackoffDoesNotStartAPassEarly) {
  opts_.retry_min = 300ms;
  deliverer_->fail_next(1, delivery::errc::rejected);
  imap_script s = session_start();
  search(s, "1");
  fetch(s, "1", {1});
  unseen(s, "1");
  answered(s);
  s.expect(R"(^(\S+) IDLE$)")
      .line("+ idling")
      .line("* 4 EXISTS")  // new mail: IDLE would normally end at once
      .line("* 5 EXISTS")
      .expect("^DONE$")
      .call([this] { idle_done_ms_ = now_ms(); })
      .tagged("OK IDLE terminated");
  search(s, "1 2 3");
  fetch(s, "1:3", {1, 2, 3});
  store(s, "1:3");
  expunge(s, "1:3");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(deliverer_->attempted_uids(), (uid_list{1, 1, 2, 3}));
  EXPECT_EQ(backoffs(), (std::vector<long long>{300}));
  EXPECT_GE(idle_done_ms_.load() - answered_ms_.load(), 300) << "new mail cut the backoff short";
}

// 2 s doubling (here 100 ms doubling), reset by a pass without failure.
TEST_F(WatcherTest, BackoffDoublesWhileTheTargetFailsAndASuccessResetsIt) {
  opts_.retry_min = 100ms;
  opts_.retry_max = 10s;
  deliverer_->fail_next(1, delivery::errc::rejected);
  deliverer_->fail_next(1, delivery::errc::rejected);
  deliverer_->fail_next(1, delivery::errc::rejected);
  deliverer_->fail_next(2, delivery::errc::rejected);
  imap_script s = session_start();
  for (int i = 0; i < 3; ++i) {  // three failed passes: 100, 200, 400 ms
    search(s, "1");
    fetch(s, "1", {1});
    unseen(s, "1");
    idle_until_done(s);
  }
  search(s, "1");
  fetch(s, "1", {1});
  store(s, "1");
  expunge(s, "1");
  unseen(s);
  s.expect(R"(^(\S+) IDLE$)")
      .line("+ idling")
      .line("* 4 EXISTS")
      .expect("^DONE$")
      .tagged("OK IDLE terminated");
  search(s, "2");  // fails once: the backoff starts again at the first step
  fetch(s, "2", {2});
  unseen(s, "2");
  idle_until_done(s);
  search(s, "2");
  fetch(s, "2", {2});
  store(s, "2");
  expunge(s, "2");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(deliverer_->attempted_uids(), (uid_list{1, 1, 1, 1, 2, 2}));
  EXPECT_EQ(deliverer_->delivered_uids(), (uid_list{1, 2}));
  EXPECT_EQ(backoffs(), (std::vector<long long>{100, 200, 400, 100}));
}

// Batches of two, overlapping: 3 (in batch 2) fails while batch 1 is still
// to be flagged. Batch 1 is flagged, the pass ends, and after the backoff 3
// and 4 (never sent) are delivered.
TEST_F(WatcherTest, FailureInTheSecondBatchWhileBatchesOverlap) {
  opts_.fetch_batch = 2;
  deliverer_->fail_next(3, delivery::errc::rejected);
  imap_script s = session_start();
  search(s, "1 2 3 4", 2);
  fetch(s, "1:2", {1, 2});
  // Batch 1 acknowledged before its size query is answered: nothing held.
  acknowledged(s, 2);
  meta(s, {3, 4});
  fetch(s, "3:4", {3, 4});
  store(s, "1:2");
  expunge(s, "1:2");
  unseen(s, "3 4");
  answered(s);
  idle_timed(s);
  search(s, "3 4", 2);
  fetch(s, "3:4", {3, 4});
  store(s, "3:4");
  expunge(s, "3:4");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(deliverer_->attempted_uids(), (uid_list{1, 2, 3, 3, 4}));
  EXPECT_EQ(fake_arbitrator::uids(arbitrator_->releases), (uid_list{3, 4}));
  EXPECT_EQ(backoffs(), (std::vector<long long>{50}));
  EXPECT_GE(idle_done_ms_.load() - answered_ms_.load(), 50);
}

// Batch 2 is fetched while 1 (batch 1) is still at the target; then 1 fails.
// What was delivered is flagged, batch 2 included; the pass ends and 1 is
// retried after the backoff.
TEST_F(WatcherTest, FailureInTheFirstBatchLearntWhileTheSecondIsFetched) {
  opts_.fetch_batch = 3;
  deliverer_->hold(io_.get_executor(), 1);
  deliverer_->fail_next(1, delivery::errc::target_unavailable);
  imap_script s = session_start();
  search(s, "1 2 3 4 5 6", 3);
  fetch(s, "1:3", {1, 2, 3});
  // 1 is still running: one delivery counts against batch 2's size of 3.
  acknowledged(s, 2);
  meta(s, {4, 5, 6});
  fetch(s, "4:5", {4, 5});
  // Batch 2 fetched and acknowledged; only now does 1 fail.
  acknowledged(s, 4);
  s.call([d = deliverer_] { d->release(1); });
  store(s, "2:3");
  store(s, "4:5");
  expunge(s, "2:5");
  unseen(s, "1 6");
  answered(s);
  idle_timed(s);
  search(s, "1 6", 3);
  fetch(s, "1,6", {1, 6});
  store(s, "1,6");
  expunge(s, "1,6");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(deliverer_->delivered_uids(), (uid_list{2, 3, 4, 5, 1, 6}));
  EXPECT_EQ(fake_arbitrator::uids(arbitrator_->releases), uid_list{1});
  EXPECT_EQ(backoffs(), (std::vector<long long>{50})) << "the pass delivered: first step";
  EXPECT_GE(idle_done_ms_.load() - answered_ms_.load(), 50);
}

// Without arbitration (mail_room's default) the backoff is the same.
TEST_F(WatcherTest, FailureWithoutArbitrationBacksOffToo) {
  noop_arbitration_ = true;
  opts_.retry_min = 200ms;
  deliverer_->fail_next(1, delivery::errc::timed_out);
  imap_script s = session_start();
  search(s, "1 2");
  fetch(s, "1:2", {1, 2});
  unseen(s, "1 2");
  answered(s);
  idle_timed(s);
  search(s, "1 2");
  fetch(s, "1:2", {1, 2});
  store(s, "1:2");
  expunge(s, "1:2");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(deliverer_->attempted_uids(), (uid_list{1, 1, 2})) << "2 was held back in pass 1";
  EXPECT_EQ(backoffs(), (std::vector<long long>{200}));
  EXPECT_GE(idle_done_ms_.load() - answered_ms_.load(), 200);
}

// A webhook's requests run a few at a time: no more reach the target at once,
// and once one failed, those still waiting are not sent.
TEST_F(WatcherTest, DeliveriesRunAtMostMaxInFlightAndStopAtTheFirstFailure) {
  opts_.max_deliveries_in_flight = 2;
  deliverer_->hold_all(io_.get_executor());
  deliverer_->fail_next(1, delivery::errc::rejected);
  imap_script s = session_start();
  search(s, "1 2 3 4 5");
  fetch(s, "1:5", {1, 2, 3, 4, 5});
  // 3, 4 and 5 wait for a free slot; only then is the target answered.
  s.wait_for([this] { return log_.count("delivery waiting for a free slot") >= 3; },
             "3 deliveries waiting for a slot")
      .call([d = deliverer_] { d->release(); });
  store(s, "2");
  expunge(s, "2");
  unseen(s, "1 3 4 5");
  answered(s);
  idle_timed(s);
  search(s, "1 3 4 5");
  fetch(s, "1,3:5", {1, 3, 4, 5});
  store(s, "1,3:5");
  expunge(s, "1,3:5");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(deliverer_->max_running.load(), 2);
  // Pass 1: 1 failed and 2 (already sent) succeeded; 3-5 were never sent.
  // 2 is flagged in that pass.
  const auto t = server_.transcript(0);
  ASSERT_GE(t.size(), 8u);
  EXPECT_EQ(t[6], R"(A0007 UID STORE 2 +FLAGS.SILENT (\Seen \Deleted))");
  EXPECT_EQ(deliverer_->attempted_uids(), (uid_list{1, 2, 1, 3, 4, 5}));
  EXPECT_EQ(fake_arbitrator::uids(arbitrator_->releases), (uid_list{1, 3, 4, 5}));
}

TEST_F(WatcherTest, ArbitrationFailureInABatchStopsThePassBeforeTheNextBatch) {
  // Batches overlap, but once batch 1 met an unavailable arbitration store,
  // batch 2 is not started: batch 1 is finished (its granted messages
  // delivered and flagged) and the pass ends; the retry takes 2 and 21.
  arbitrator_->answer_for(2, claim_result::unavailable);
  uid_list first_batch;
  std::string all;
  for (std::uint32_t u = 1; u <= 21; ++u) {
    if (u <= 20 && u != 2) first_batch.push_back(u);
    all += (all.empty() ? "" : " ") + std::to_string(u);
  }
  imap_script s = session_start();
  search(s, all);
  fetch(s, "1,3:20", first_batch);
  store(s, "1,3:20");
  expunge(s, "1,3:20");
  unseen(s, "2 21");
  idle_timed(s);
  search(s, "2 21");
  fetch(s, "2,21", {2, 21});
  store(s, "2,21");
  expunge(s, "2,21");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  const auto t = server_.transcript(0);
  ASSERT_GE(t.size(), 8u);
  EXPECT_EQ(t[5], "A0006 UID FETCH 1,3:20 (UID BODY.PEEK[])");
  EXPECT_EQ(t[6], R"(A0007 UID STORE 1,3:20 +FLAGS.SILENT (\Seen \Deleted))")
      << "batch 2 was started although the arbitration store had failed";
  EXPECT_EQ(deliverer_->delivered_uids().size(), 21u);
  EXPECT_EQ(delivered_count_, 21u);
}

TEST_F(WatcherTest, ArbitrationUnavailableFetchesNothingAndRetries) {
  arbitrator_->answer_next(2, claim_result::unavailable);
  imap_script s = session_start();
  search(s, "1 2");
  unseen(s, "1 2");
  idle_until_done(s);
  search(s, "1 2");
  fetch(s, "1:2", {1, 2});
  store(s, "1:2");
  expunge(s, "1:2");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher(5s);

  EXPECT_EQ(server_.transcript(0), (lines{
                                       "A0001 LOGIN incoming@example.com s3cret-pw",
                                       "A0002 SELECT INBOX",
                                       "A0003 UID SEARCH DELETED",
                                       "A0004 UID SEARCH UNSEEN UNKEYWORD $MailroomRejected",
                                       "A0005 UID FETCH 1:2 (UID RFC822.SIZE FLAGS INTERNALDATE)",
                                       "A0006 UID SEARCH UNSEEN",
                                       "A0007 UID FETCH 1 (UID RFC822.SIZE FLAGS INTERNALDATE)",
                                       "A0008 IDLE",
                                       "DONE",
                                       "A0009 UID SEARCH UNSEEN UNKEYWORD $MailroomRejected",
                                       "A0010 UID FETCH 1:2 (UID RFC822.SIZE FLAGS INTERNALDATE)",
                                       "A0011 UID FETCH 1:2 (UID BODY.PEEK[])",
                                       R"(A0012 UID STORE 1:2 +FLAGS.SILENT (\Seen \Deleted))",
                                       "A0013 UID EXPUNGE 1:2",
                                       "A0014 UID SEARCH UNSEEN",
                                       "A0015 IDLE",
                                       "DONE",
                                       "A0016 LOGOUT",
                                   }));
  EXPECT_EQ(fake_arbitrator::uids(arbitrator_->claims), (uid_list{1, 2, 1, 2}));
  EXPECT_EQ(deliverer_->attempted_uids(), (uid_list{1, 2}));
  // The retry came after the backoff: waiting the 30 s idle_timeout would
  // have outlasted the run.
  EXPECT_EQ(backoffs(), (std::vector<long long>{50}));
}

TEST_F(WatcherTest, ConnectionDroppedDuringFetchIsResumedOnANewConnection) {
  // Message 1 arrives whole and is delivered while 2 is still on the wire
  // (deliveries start as each literal completes); then the connection drops.
  // 1 is recorded as delivered, 2 and 3 are released. On the new connection
  // the arbiter answers "delivered" for 1 (what the Redis arbiter does with
  // the record), so 1 is only flagged and 2 and 3 are delivered.
  arbitrator_->answer_for(1, arbitration::claim_result::granted);
  arbitrator_->answer_for(1, arbitration::claim_result::delivered);
  imap_script first = session_start();
  search(first, "1 2 3");
  first.expect(R"(^(\S+) UID FETCH 1:3 \(UID BODY\.PEEK\[\]\)$)")
      .send(fetch_response({1}) + "* 2 FETCH (UID 2 BODY[] {40}\r\nMessage-ID: <2@exa")
      .close();
  server_.add(first);
  imap_script second = session_start();
  search(second, "1 2 3");
  fetch(second, "2:3", {2, 3});
  store(second, "1:3");
  expunge(second, "1:3");
  unseen(second);
  idle_until_stopped(second, stop_);
  server_.add(second);

  run_watcher();

  EXPECT_EQ(server_.connection_count(), 2u);
  EXPECT_EQ(server_.transcript(0), (lines{
                                       "A0001 LOGIN incoming@example.com s3cret-pw",
                                       "A0002 SELECT INBOX",
                                       "A0003 UID SEARCH DELETED",
                                       "A0004 UID SEARCH UNSEEN UNKEYWORD $MailroomRejected",
                                       "A0005 UID FETCH 1:3 (UID RFC822.SIZE FLAGS INTERNALDATE)",
                                       "A0006 UID FETCH 1:3 (UID BODY.PEEK[])",
                                   }));
  EXPECT_EQ(server_.transcript(1), (lines{
                                       "A0001 LOGIN incoming@example.com s3cret-pw",
                                       "A0002 SELECT INBOX",
                                       "A0003 UID SEARCH DELETED",
                                       "A0004 UID SEARCH UNSEEN UNKEYWORD $MailroomRejected",
                                       "A0005 UID FETCH 1:3 (UID RFC822.SIZE FLAGS INTERNALDATE)",
                                       "A0006 UID FETCH 2:3 (UID BODY.PEEK[])",
                                       R"(A0007 UID STORE 1:3 +FLAGS.SILENT (\Seen \Deleted))",
                                       "A0008 UID EXPUNGE 1:3",
                                       "A0009 UID SEARCH UNSEEN",
                                       "A0010 IDLE",
                                       "DONE",
                                       "A0011 LOGOUT",
                                   }));
  EXPECT_EQ(deliverer_->attempted_uids(), (uid_list{1, 2, 3})) << "each delivered once";
  EXPECT_EQ(fake_arbitrator::uids(arbitrator_->marked), (uid_list{1, 2, 3}))
      << "1 recorded although its batch's FETCH failed";
  EXPECT_EQ(fake_arbitrator::uids(arbitrator_->releases), (uid_list{2, 3}))
      << "the claims of the undelivered part of the interrupted fetch are given back";
  EXPECT_TRUE(fatals_.empty());
}

TEST_F(WatcherTest, ConnectionDroppedBeforeStoreRedeliversOnTheNewConnection) {
  // At-least-once: delivered, but the flags never reached the server.
  imap_script first = session_start();
  search(first, "1 2");
  fetch(first, "1:2", {1, 2});
  first.expect(R"(^(\S+) UID STORE 1:2 \+FLAGS\.SILENT \(\\Seen \\Deleted\)$)").close();
  server_.add(first);
  imap_script second = session_start();
  search(second, "1 2");
  fetch(second, "1:2", {1, 2});
  store(second, "1:2");
  expunge(second, "1:2");
  unseen(second);
  idle_until_stopped(second, stop_);
  server_.add(second);

  run_watcher();

  EXPECT_EQ(server_.connection_count(), 2u);
  EXPECT_EQ(deliverer_->attempted_uids(), (uid_list{1, 2, 1, 2}));
  EXPECT_EQ(server_.transcript(1).at(6), R"(A0007 UID STORE 1:2 +FLAGS.SILENT (\Seen \Deleted))");
}

TEST_F(WatcherTest, RejectedFirstLoginIsFatal) {
  server_.add(imap_script()
                  .line("* OK [CAPABILITY " + kCaps + "] fake ready")
                  .expect(R"(^(\S+) LOGIN .*$)")
                  .tagged("NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)")
                  .expect_eof());

  run_watcher();

  ASSERT_EQ(fatals_.size(), 1u);
  EXPECT_EQ(fatals_[0].mailbox,
            "incoming@example.com/INBOX@127.0.0.1:" + std::to_string(server_.port()));
  EXPECT_NE(fatals_[0].message.find("Invalid credentials"), std::string::npos)
      << fatals_[0].message;
  EXPECT_EQ(fatals_[0].message.find(kPassword), std::string::npos) << fatals_[0].message;
  EXPECT_EQ(server_.connection_count(), 1u) << "no reconnect after a rejected first login";
  EXPECT_TRUE(deliverer_->attempts.empty());
}

TEST_F(WatcherTest, MissingMailboxOnFirstConnectionIsFatal) {
  // Documented in watcher.hpp (on_fatal) and the README (exit code 1): a
  // folder that cannot be selected is a problem reconnecting cannot cure.
  server_.add(imap_script()
                  .line("* OK [CAPABILITY " + kCaps + "] fake ready")
                  .expect(R"(^(\S+) LOGIN .*$)")
                  .tagged("OK [CAPABILITY " + kCaps + "] Logged in")
                  .expect(R"(^(\S+) SELECT INBOX$)")
                  .tagged("NO [NONEXISTENT] Mailbox doesn't exist: INBOX")
                  .expect_eof());

  run_watcher(3s);

  ASSERT_EQ(fatals_.size(), 1u) << "the watcher kept reconnecting instead of giving up";
  EXPECT_EQ(fatals_[0].mailbox,
            "incoming@example.com/INBOX@127.0.0.1:" + std::to_string(server_.port()));
  EXPECT_NE(fatals_[0].message.find("Mailbox doesn't exist"), std::string::npos)
      << fatals_[0].message;
  EXPECT_EQ(server_.connection_count(), 1u);
}

TEST_F(WatcherTest, RejectedLoginAfterAnEarlierSessionIsRetried) {
  imap_script first = session_start();
  search(first, "");
  unseen(first);
  first.expect(R"(^(\S+) IDLE$)").close();
  server_.add(first);
  server_.add(imap_script()
                  .line("* OK [CAPABILITY " + kCaps + "] fake ready")
                  .expect(R"(^(\S+) LOGIN .*$)")
                  .tagged("NO [UNAVAILABLE] Temporary authentication failure")
                  .expect_eof());
  imap_script third = session_start();
  search(third, "");
  unseen(third);
  idle_until_stopped(third, stop_);
  server_.add(third);

  run_watcher();

  EXPECT_TRUE(fatals_.empty()) << "only a rejected first login is fatal";
  EXPECT_EQ(server_.connection_count(), 3u);
  EXPECT_EQ(counters_.login_failures, 1u);
  EXPECT_EQ(counters_.connection_errors, 2u);
}

TEST_F(WatcherTest, StopDuringIdleSendsDoneAndLogoutPromptly) {
  imap_script s = session_start();
  search(s, "");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(server_.transcript(0), (lines{
                                       "A0001 LOGIN incoming@example.com s3cret-pw",
                                       "A0002 SELECT INBOX",
                                       "A0003 UID SEARCH DELETED",
                                       "A0004 UID SEARCH UNSEEN UNKEYWORD $MailroomRejected",
                                       "A0005 UID SEARCH UNSEEN",
                                       "A0006 IDLE",
                                       "DONE",
                                       "A0007 LOGOUT",
                                   }));
  // Not waiting for the IDLE to end by itself: its 30 s idle_timeout would
  // outlast the run.
  EXPECT_GE(stop_latency_.count(), 0) << "stop() was not called";
  EXPECT_TRUE(fatals_.empty());
}

TEST_F(WatcherTest, StopDuringADeliveryLetsItFinishAndFlagsIt) {
  // The target answers only after stop() was taken.
  deliverer_->hold_all(io_.get_executor());
  release_on_stop_ = true;
  deliverer_->on_deliver = [this](const mail_message&) { stop_.set(); };
  imap_script s = session_start();
  search(s, "1");
  fetch(s, "1", {1});
  store(s, "1");
  expunge(s, "1");
  s.expect(R"(^(\S+) LOGOUT$)")
      .line("* BYE Logging out")
      .tagged("OK Logout completed")
      .expect_eof();
  server_.add(s);

  run_watcher();

  EXPECT_EQ(server_.transcript(0), (lines{
                                       "A0001 LOGIN incoming@example.com s3cret-pw",
                                       "A0002 SELECT INBOX",
                                       "A0003 UID SEARCH DELETED",
                                       "A0004 UID SEARCH UNSEEN UNKEYWORD $MailroomRejected",
                                       "A0005 UID FETCH 1 (UID RFC822.SIZE FLAGS INTERNALDATE)",
                                       "A0006 UID FETCH 1 (UID BODY.PEEK[])",
                                       R"(A0007 UID STORE 1 +FLAGS.SILENT (\Seen \Deleted))",
                                       "A0008 UID EXPUNGE 1",
                                       "A0009 LOGOUT",
                                   }));
  EXPECT_EQ(deliverer_->delivered_uids(), uid_list{1});
  EXPECT_TRUE(arbitrator_->releases.empty());
}

TEST_F(WatcherTest, StopDuringAFetchLeavesTheMessagesForTheNextStart) {
  imap_script s = session_start();
  search(s, "1 2");
  s.expect(R"(^(\S+) UID FETCH 1:2 \(UID BODY\.PEEK\[\]\)$)")
      .call([stop = stop_] { stop.set(); })
      // The bodies come once the watcher has taken the stop.
      .wait_for([this] { return stop_taken_.load(); }, "stop() to be called")
      .send(fetch_response({1, 2}))
      .tagged("OK Fetch completed")
      .expect(R"(^(\S+) LOGOUT$)")
      .line("* BYE Logging out")
      .tagged("OK Logout completed")
      .expect_eof();
  server_.add(s);

  run_watcher(5s);

  EXPECT_EQ(server_.transcript(0), (lines{
                                       "A0001 LOGIN incoming@example.com s3cret-pw",
                                       "A0002 SELECT INBOX",
                                       "A0003 UID SEARCH DELETED",
                                       "A0004 UID SEARCH UNSEEN UNKEYWORD $MailroomRejected",
                                       "A0005 UID FETCH 1:2 (UID RFC822.SIZE FLAGS INTERNALDATE)",
                                       "A0006 UID FETCH 1:2 (UID BODY.PEEK[])",
                                       "A0007 LOGOUT",
                                   }));
  EXPECT_TRUE(deliverer_->attempts.empty());
  EXPECT_EQ(fake_arbitrator::uids(arbitrator_->releases), (uid_list{1, 2}));
}

TEST_F(WatcherTest, StopDuringTheReconnectBackoffReturnsPromptly) {
  // A backoff longer than the run: only stop() can end it in time.
  opts_.reconnect_min = 60s;
  opts_.reconnect_max = 60s;
  stop_in_backoff_ = true;
  server_.add(imap_script()
                  .line("* BYE Server shutting down")
                  .then([stop = stop_](test::imap_connection& c) {
                    c.close_now();
                    stop.set();
                    return false;
                  }));

  run_watcher();

  EXPECT_EQ(server_.connection_count(), 1u);
  EXPECT_GE(stop_latency_.count(), 0) << "stop() was not called";
  EXPECT_TRUE(fatals_.empty()) << "a BYE is not a reason to give up";
}

TEST_F(WatcherTest, WithoutIdleTheWatcherPollsAndStopsPromptly) {
  imap_script s = session_start("IMAP4rev1 UIDPLUS");
  search(s, "");
  unseen(s);
  // No IDLE: the watcher waits without a command; stop() must end the wait.
  // It logs "Idling" just before, with no suspension in between.
  s.wait_for([this] { return log_.count("Idling") >= 1; }, "the poll wait to begin")
      .call([stop = stop_] { stop.set(); })
      .expect(R"(^(\S+) LOGOUT$)")
      .line("* BYE Logging out")
      .tagged("OK Logout completed")
      .expect_eof();
  server_.add(s);

  run_watcher(5s);

  EXPECT_EQ(server_.transcript(0), (lines{
                                       "A0001 LOGIN incoming@example.com s3cret-pw",
                                       "A0002 SELECT INBOX",
                                       "A0003 UID SEARCH DELETED",
                                       "A0004 UID SEARCH UNSEEN UNKEYWORD $MailroomRejected",
                                       "A0005 UID SEARCH UNSEEN",
                                       "A0006 LOGOUT",
                                   }));
  // The poll interval (idle_timeout, 30 s) would outlast the run.
  EXPECT_GE(stop_latency_.count(), 0) << "stop() was not called";
}

TEST_F(WatcherTest, NewMailDuringIdleStartsAPass) {
  imap_script s = session_start();
  search(s, "");
  unseen(s);
  s.expect(R"(^(\S+) IDLE$)")
      .line("+ idling")
      .line("* 4 EXISTS")
      .expect("^DONE$")
      .tagged("OK IDLE terminated");
  search(s, "7");
  fetch(s, "7", {7});
  store(s, "7");
  expunge(s, "7");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(deliverer_->delivered_uids(), uid_list{7});
  EXPECT_EQ(server_.transcript(0), (lines{
                                       "A0001 LOGIN incoming@example.com s3cret-pw",
                                       "A0002 SELECT INBOX",
                                       "A0003 UID SEARCH DELETED",
                                       "A0004 UID SEARCH UNSEEN UNKEYWORD $MailroomRejected",
                                       "A0005 UID SEARCH UNSEEN",
                                       "A0006 IDLE",
                                       "DONE",
                                       "A0007 UID SEARCH UNSEEN UNKEYWORD $MailroomRejected",
                                       "A0008 UID FETCH 7 (UID RFC822.SIZE FLAGS INTERNALDATE)",
                                       "A0009 UID FETCH 7 (UID BODY.PEEK[])",
                                       R"(A0010 UID STORE 7 +FLAGS.SILENT (\Seen \Deleted))",
                                       "A0011 UID EXPUNGE 7",
                                       "A0012 UID SEARCH UNSEEN",
                                       "A0013 IDLE",
                                       "DONE",
                                       "A0014 LOGOUT",
                                   }));
}

TEST_F(WatcherTest, LimitMaxUnreadBoundsOnePass) {
  mb_.limit_max_unread = 3;
  imap_script s = session_start();
  search(s, "1 2 3 4 5 6 7 8 9 10", 3);
  fetch(s, "1:3", {1, 2, 3});
  store(s, "1:3");
  expunge(s, "1:3");
  unseen(s, "4 5 6 7 8 9 10");  // over limit_max_unread: the next pass
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(fake_arbitrator::uids(arbitrator_->claims), (uid_list{1, 2, 3}));
  EXPECT_EQ(deliverer_->attempted_uids(), (uid_list{1, 2, 3}));
  EXPECT_EQ(server_.transcript(0).at(4),
            "A0005 UID FETCH 1:3 (UID RFC822.SIZE FLAGS INTERNALDATE)");
  EXPECT_EQ(server_.transcript(0).at(5), "A0006 UID FETCH 1:3 (UID BODY.PEEK[])");
}

TEST_F(WatcherTest, LargeBacklogIsFetchedAndFlaggedInBatches) {
  uid_list first_batch, second_batch;
  std::string all;
  for (std::uint32_t u = 1; u <= 25; ++u) {
    (u <= 20 ? first_batch : second_batch).push_back(u);
    all += (all.empty() ? "" : " ") + std::to_string(u);
  }
  // Small batches overlap: the server fetches batch 2 while batch 1 is being
  // acknowledged, and batch 1 is flagged after that fetch.
  imap_script s = session_start();
  search(s, all);
  fetch(s, "1:20", first_batch);
  acknowledged(s, 20);
  meta(s, second_batch);
  fetch(s, "21:25", second_batch);
  store(s, "1:20");
  store(s, "21:25");
  expunge(s, "1:25");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(arbitrator_->claims.size(), 25u);
  EXPECT_EQ(deliverer_->delivered_uids().size(), 25u);
  EXPECT_EQ(delivered_count_, 25u);
  EXPECT_EQ(fake_arbitrator::uids(arbitrator_->marked).size(), 25u);
}

// Messages 1-4 in two batches of two. `overlapped`: batch 2 is fetched
// before batch 1 is flagged; otherwise batch 1 is finished first.
void two_batches_of_two(imap_script& s, std::size_t batch, bool overlapped,
                        const std::function<void(imap_script&)>& before_sizes,
                        const std::function<void(imap_script&)>& after_sizes) {
  search(s, "1 2 3 4", batch);
  fetch(s, "1:2", {1, 2});
  before_sizes(s);
  meta(s, {3, 4});
  after_sizes(s);
  if (overlapped) {
    fetch(s, "3:4", {3, 4});
    store(s, "1:2");
  } else {
    store(s, "1:2");
    fetch(s, "3:4", {3, 4});
  }
  store(s, "3:4");
  expunge(s, "1:4");
  unseen(s);
}

TEST_F(WatcherTest, BodiesStillBeingDeliveredCountAgainstTheByteBudget) {
  // fetch_bytes holds two of these 64-byte messages. 1 and 2 are held at the
  // target, so when the sizes of 3 and 4 arrive their bodies are still in
  // memory: batch 1 must be finished (acknowledged and flagged) before 3 and
  // 4 are fetched. The target answers once the watcher said it waits for it;
  // a watcher fetching 3 and 4 first fails the transcript (or never says so).
  ASSERT_EQ(body_of(1).size(), 64u);
  opts_.fetch_bytes = 150;
  deliverer_->hold_all(io_.get_executor());
  imap_script s = session_start();
  two_batches_of_two(
      s, 20, false, [](imap_script&) {},
      [this](imap_script& x) { release_after_wait_decision(x); });
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(deliverer_->delivered_uids(), (uid_list{1, 2, 3, 4}));
  EXPECT_EQ(delivered_count_, 4u);
  EXPECT_EQ(log_.count("waiting for deliveries before fetching more"), 1u);
}

TEST_F(WatcherTest, DeliveriesStillRunningCountAgainstTheBatchSize) {
  // At most fetch_batch deliveries run at once, across batches: with 1 and 2
  // still at the target, 3 and 4 wait until batch 1 is finished.
  opts_.fetch_batch = 2;
  deliverer_->hold_all(io_.get_executor());
  imap_script s = session_start();
  two_batches_of_two(
      s, 2, false, [](imap_script&) {}, [this](imap_script& x) { release_after_wait_decision(x); });
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(deliverer_->delivered_uids(), (uid_list{1, 2, 3, 4}));
  EXPECT_EQ(delivered_count_, 4u);
  EXPECT_EQ(log_.count("waiting for deliveries before fetching more"), 1u);
}

TEST_F(WatcherTest, FastDeliveriesLetTheNextBatchOverlap) {
  // The same with a target that has acknowledged 1 and 2 before the sizes of
  // 3 and 4 are answered: nothing is held, so 3 and 4 are fetched before
  // batch 1 is flagged.
  opts_.fetch_bytes = 150;
  imap_script s = session_start();
  two_batches_of_two(
      s, 20, true, [this](imap_script& x) { acknowledged(x, 2); }, [](imap_script&) {});
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(deliverer_->delivered_uids(), (uid_list{1, 2, 3, 4}));
  EXPECT_EQ(delivered_count_, 4u);
  EXPECT_EQ(log_.count("waiting for deliveries before fetching more"), 0u);
}

TEST_F(WatcherTest, OversizeMessageIsFlaggedNotFetchedAndOthersAreDelivered) {
  mb_.max_message_size = 1024;
  const std::string big = std::to_string(2 * 1024 * 1024);
  imap_script s = session_start();
  s.expect(R"(^(\S+) UID SEARCH UNSEEN UNKEYWORD \$MailroomRejected$)")
      .line("* SEARCH 1 2 3")
      .tagged("OK Search completed");
  s.expect(R"(^(\S+) UID FETCH 1:3 \(UID RFC822\.SIZE FLAGS INTERNALDATE\)$)")
      .line("* 1 FETCH (UID 1 RFC822.SIZE 80 FLAGS ())")
      .line("* 2 FETCH (UID 2 RFC822.SIZE " + big + " FLAGS (\\Recent))")
      .line("* 3 FETCH (UID 3 RFC822.SIZE 80 FLAGS ())")
      .tagged("OK Fetch completed");
  store(s, "2", R"(\$MailroomOversize)");
  fetch(s, "1,3", {1, 3});
  store(s, "1,3");
  expunge(s, "1,3");
  unseen(s, "2");  // flagged $MailroomOversize, not \\Seen
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(deliverer_->delivered_uids(), (uid_list{1, 3}));
  EXPECT_EQ(fake_arbitrator::uids(arbitrator_->claims), (uid_list{1, 3}))
      << "an oversize message is not even claimed";
  EXPECT_EQ(counters_.oversize, 1u);
  EXPECT_EQ(counters_.delivered, 2u);
}

TEST_F(WatcherTest, OversizeMessageAlreadyFlaggedIsSkippedQuietly) {
  mb_.max_message_size = 1024;
  imap_script s = session_start();
  s.expect(R"(^(\S+) UID SEARCH UNSEEN UNKEYWORD \$MailroomRejected$)")
      .line("* SEARCH 2")
      .tagged("OK Search completed");
  s.expect(R"(^(\S+) UID FETCH 2 \(UID RFC822\.SIZE FLAGS INTERNALDATE\)$)")
      .line("* 1 FETCH (UID 2 RFC822.SIZE 5000000 FLAGS ($MailroomOversize))")
      .tagged("OK Fetch completed");
  unseen(s, "2");
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_TRUE(deliverer_->attempts.empty());
  EXPECT_TRUE(arbitrator_->claims.empty());
  EXPECT_EQ(counters_.oversize, 0u) << "counted once, when it was flagged";
}

TEST_F(WatcherTest, OversizeMessageIsMovedWithMove) {
  mb_.max_message_size = 1024;
  mb_.on_oversize = config::oversize_action::move;
  mb_.oversize_folder = "Too Large";
  imap_script s = session_start(kCaps + " MOVE");
  s.expect(R"(^(\S+) UID SEARCH UNSEEN UNKEYWORD \$MailroomRejected$)")
      .line("* SEARCH 4")
      .tagged("OK Search completed");
  s.expect(R"(^(\S+) UID FETCH 4 \(UID RFC822\.SIZE FLAGS INTERNALDATE\)$)")
      .line("* 1 FETCH (UID 4 RFC822.SIZE 5000000 FLAGS ())")
      .tagged("OK Fetch completed");
  s.expect(R"(^(\S+) UID MOVE 4 "Too Large"$)").tagged("OK Move completed");
  unseen(s);  // moved away
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_TRUE(deliverer_->attempts.empty());
  EXPECT_EQ(counters_.oversize, 1u);
}

// Without MOVE and UIDPLUS only a plain EXPUNGE could remove the original,
// and it would remove other clients' \Deleted messages too: the message is
// copied and flagged \Deleted plus the keyword (which keeps it out of later
// passes); it leaves with the pass's expunge only when expunge_deleted is on.
imap_script oversize_copy_without_move_or_uidplus(bool expunge_deleted, const async_flag& stop) {
  const std::string caps = "IMAP4rev1 IDLE";
  imap_script s;
  s.line("* OK [CAPABILITY " + caps + "] fake ready")
      .expect(R"(^(\S+) LOGIN incoming@example\.com s3cret-pw$)")
      .tagged("OK [CAPABILITY " + caps + "] Logged in")
      .expect(R"(^(\S+) SELECT INBOX$)")
      .line("* OK [UIDVALIDITY 42] UIDs valid")
      .tagged("OK [READ-WRITE] Select completed");
  if (expunge_deleted)
    s.expect(R"(^(\S+) UID SEARCH DELETED$)").line("* SEARCH").tagged("OK Search completed");
  s.expect(R"(^(\S+) UID SEARCH UNSEEN UNKEYWORD \$MailroomRejected$)")
      .line("* SEARCH 4")
      .tagged("OK Search completed");
  s.expect(R"(^(\S+) UID FETCH 4 \(UID RFC822\.SIZE FLAGS INTERNALDATE\)$)")
      .line("* 1 FETCH (UID 4 RFC822.SIZE 5000000 FLAGS ())")
      .tagged("OK Fetch completed");
  s.expect(R"(^(\S+) UID COPY 4 "INBOX\.Too Large"$)").tagged("OK Copy completed");
  store(s, "4", R"(\\Deleted \$MailroomOversize)");
  if (expunge_deleted) s.expect(R"(^(\S+) EXPUNGE$)").tagged("OK Expunge completed");
  unseen(s, expunge_deleted ? "" : "4");  // copied and flagged \\Deleted, not \\Seen
  idle_until_stopped(s, stop);
  return s;
}

TEST_F(WatcherTest, OversizeMoveWithoutMoveOrUidplusCopiesAndFlagsWithoutExpunge) {
  mb_.max_message_size = 1024;
  mb_.on_oversize = config::oversize_action::move;
  mb_.oversize_folder = "INBOX.Too Large";
  mb_.expunge_deleted = false;
  server_.add(oversize_copy_without_move_or_uidplus(false, stop_));

  run_watcher();

  EXPECT_TRUE(deliverer_->attempts.empty());
  EXPECT_EQ(counters_.oversize, 1u);
}

TEST_F(WatcherTest, OversizeMoveWithoutMoveOrUidplusIsExpungedWithExpungeDeleted) {
  mb_.max_message_size = 1024;
  mb_.on_oversize = config::oversize_action::move;
  mb_.oversize_folder = "INBOX.Too Large";
  mb_.expunge_deleted = true;
  server_.add(oversize_copy_without_move_or_uidplus(true, stop_));

  run_watcher();

  EXPECT_TRUE(deliverer_->attempts.empty());
  EXPECT_EQ(counters_.oversize, 1u);
}

TEST_F(WatcherTest, MessageWithDeliveredRecordIsFlaggedWithoutASecondDelivery) {
  // An earlier process delivered 2 and died before flagging it.
  arbitrator_->answer_for(2, claim_result::delivered);
  imap_script s = session_start();
  search(s, "1 2 3");
  fetch(s, "1,3", {1, 3});
  store(s, "1:3");
  expunge(s, "1:3");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(deliverer_->attempted_uids(), (uid_list{1, 3}));
  EXPECT_EQ(counters_.already_delivered, 1u);
  EXPECT_EQ(counters_.delivered, 2u);
}

TEST_F(WatcherTest, MessagesClaimedElsewhereAreLookedAtAgainAfterTheClaimTtl) {
  // A claim left by a process that died: it expires within claim_ttl, and no
  // new mail will wake the IDLE, so the next pass must come by itself, every
  // quarter claim_ttl.
  mb_.arbitration_opts.claim_ttl = 4s;
  arbitrator_->answer_for(3, claim_result::taken);
  imap_script s = session_start();
  search(s, "3");
  unseen(s, "3");
  answered(s);
  idle_timed(s);
  search(s, "3");
  fetch(s, "3", {3});
  store(s, "3");
  expunge(s, "3");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  // Looked again after claim_ttl / 4: the 30 s idle_timeout would have
  // outlasted the run.
  EXPECT_EQ(deliverer_->delivered_uids(), uid_list{3});
  EXPECT_GE(idle_done_ms_.load() - answered_ms_.load(), 1000);
}

TEST_F(WatcherTest, DeliveryCarriesAStableJidThatIsRecordedBeforeTheFlags) {
  imap_script s = session_start();
  search(s, "5 6");
  fetch(s, "5:6", {5, 6});
  s.expect(R"(^(\S+) UID STORE 5:6 \+FLAGS\.SILENT \(\\Seen \\Deleted\)$)")
      .call([this] { marked_at_store_ = static_cast<int>(arbitrator_->marked.size()); })
      .tagged("OK Store completed");
  expunge(s, "5:6");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  ASSERT_EQ(deliverer_->attempts.size(), 2u);
  for (const auto& a : deliverer_->attempts) {
    EXPECT_EQ(a.message.id,
              delivery::stable_jid("127.0.0.1:" + std::to_string(server_.port()),
                                   "incoming@example.com", "INBOX", kUidValidity, a.message.uid));
    EXPECT_EQ(a.message.id.size(), 24u);
  }
  EXPECT_NE(deliverer_->attempts[0].message.id, deliverer_->attempts[1].message.id);
  ASSERT_EQ(arbitrator_->marked_jids.size(), 2u);
  EXPECT_EQ(arbitrator_->marked_jids[0], deliverer_->attempts[0].message.id);
  EXPECT_EQ(marked_at_store_.load(), 2) << "delivery recorded before UID STORE";
}

TEST_F(WatcherTest, ClaimsAreRenewedWhileTheirDeliveryRuns) {
  // claim_ttl 1 s: renewed about every 333 ms. The target holds 5 until the
  // claims of 5 and 6 were renewed twice.
  arbitrator_->ttl = 1s;
  deliverer_->hold(io_.get_executor(), 5);
  imap_script s = session_start();
  search(s, "5 6");
  fetch(s, "5:6", {5, 6});
  s.wait_for([a = arbitrator_] { return a->renewal_count >= 4; }, "claims renewed twice")
      .call([d = deliverer_] { d->release(5); });
  store(s, "5:6");
  expunge(s, "5:6");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(deliverer_->delivered_uids(), (uid_list{6, 5}));
  const auto renewed = fake_arbitrator::uids(arbitrator_->renewals);
  ASSERT_GE(renewed.size(), 4u);
  // Only what the pass held: 5 and 6 (6 until the batch was recorded).
  for (const auto uid : renewed) EXPECT_TRUE(uid == 5 || uid == 6) << uid;
  EXPECT_EQ(arbitrator_->marked.size(), 2u);
}

TEST_F(WatcherTest, ARecordTheStoreDidNotTakeIsLoggedCountedAndStillFlagged) {
  // The target acknowledged: the message leaves the mailbox as it should;
  // only the safety net for a crash before the flag is missing, and says so.
  arbitrator_->records_answer(arbitration::write_result::unavailable);
  imap_script s = session_start();
  search(s, "5 6");
  fetch(s, "5:6", {5, 6});
  store(s, "5:6");
  expunge(s, "5:6");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(deliverer_->delivered_uids(), (uid_list{5, 6}));
  EXPECT_EQ(log_.count("recording delivery failed"), 2u);
  EXPECT_EQ(counters_.arbitration_write_errors, 2u);
  EXPECT_EQ(counters_.delivered, 2u);
  const auto lines = log_.lines("recording delivery failed");
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines[0]["error"], "fake store unreachable");
}

TEST_F(WatcherTest, ARecordThatFindsItsClaimExpiredIsLoggedAndCounted) {
  arbitrator_->records_answer(arbitration::write_result::claim_lost);
  imap_script s = session_start();
  search(s, "5");
  fetch(s, "5", {5});
  store(s, "5");
  expunge(s, "5");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(log_.count("claim expired before the delivery was recorded"), 1u);
  EXPECT_EQ(counters_.claims_lost, 1u);
  EXPECT_EQ(counters_.delivered, 1u);
}

TEST_F(WatcherTest, DeletedLeftoversOfAnEarlierSessionAreExpungedAtStart) {
  imap_script s;
  s.line("* OK [CAPABILITY " + kCaps + "] fake ready")
      .expect(R"(^(\S+) LOGIN .*$)")
      .tagged("OK [CAPABILITY " + kCaps + "] Logged in")
      .expect(R"(^(\S+) SELECT INBOX$)")
      .line("* OK [UIDVALIDITY 42] UIDs valid")
      .tagged("OK [READ-WRITE] Select completed")
      .expect(R"(^(\S+) UID SEARCH DELETED$)")
      .line("* SEARCH 8 9 12")
      .tagged("OK Search completed");
  expunge(s, "8:9,12");
  search(s, "");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  EXPECT_EQ(counters_.expunged_leftovers, 3u);
}

TEST_F(WatcherTest, IdleIsRenewedEveryIdleCheckInterval) {
  mb_.idle_check_interval = 1s;
  imap_script s = session_start();
  search(s, "");
  unseen(s);
  answered(s);  // the IDLE's timer starts after this answer arrived
  idle_timed(s);
  search(s, "");
  unseen(s);
  idle_until_stopped(s, stop_);
  server_.add(s);

  run_watcher();

  // Renewed, not left for the 30 s idle_timeout (which would outlast the run),
  // and not before the interval.
  EXPECT_GE(idle_done_ms_.load() - answered_ms_.load(), 1000) << "renewed too early";
}

TEST_F(WatcherTest, ServerSilentAfterDoneIsDetectedAndReplaced) {
  // A black-holed server: IDLE accepted, then DONE is never answered.
  mb_.idle_check_interval = 1s;
  opts_.imap.command_timeout = 1s;
  imap_script first = session_start();
  search(first, "");
  // No answer to DONE: the client must give up (command_timeout) and close.
  unseen(first);
  first.expect(R"(^(\S+) IDLE$)").line("+ idling").expect("^DONE$").expect_eof();
  server_.add(first);
  imap_script second = session_start();
  search(second, "7");
  fetch(second, "7", {7});
  store(second, "7");
  expunge(second, "7");
  unseen(second);
  idle_until_stopped(second, stop_);
  server_.add(second);

  run_watcher(15s);

  EXPECT_EQ(server_.connection_count(), 2u);
  EXPECT_EQ(deliverer_->delivered_uids(), uid_list{7});
  EXPECT_EQ(counters_.connection_errors, 1u);
}

TEST_F(WatcherTest, RejectedFirstLoginIsRetriedWithPolicyRetry) {
  mb_.on_permanent_error = config::permanent_error_policy::retry;
  server_.add(imap_script()
                  .line("* OK [CAPABILITY " + kCaps + "] fake ready")
                  .expect(R"(^(\S+) LOGIN .*$)")
                  .tagged("NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)")
                  .expect_eof());
  imap_script second = session_start();
  search(second, "");
  unseen(second);
  idle_until_stopped(second, stop_);
  server_.add(second);

  run_watcher();

  EXPECT_TRUE(fatals_.empty());
  EXPECT_EQ(server_.connection_count(), 2u);
}

TEST_F(WatcherTest, RejectedLoginAfterAnEarlierSessionIsFatalWithPolicyExit) {
  mb_.on_permanent_error = config::permanent_error_policy::exit;
  imap_script first = session_start();
  first.expect(R"(^(\S+) UID SEARCH UNSEEN UNKEYWORD \$MailroomRejected$)").close();
  server_.add(first);
  server_.add(imap_script()
                  .line("* OK [CAPABILITY " + kCaps + "] fake ready")
                  .expect(R"(^(\S+) LOGIN .*$)")
                  .tagged("NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)")
                  .expect_eof());

  run_watcher();

  ASSERT_EQ(fatals_.size(), 1u);
  EXPECT_EQ(server_.connection_count(), 2u);
}

TEST_F(WatcherTest, PlaintextLoginIsRefusedUnlessAllowed) {
  mb_.allow_plaintext_login = false;
  server_.add(imap_script().line("* OK [CAPABILITY " + kCaps + "] fake ready").expect_eof());

  run_watcher();

  ASSERT_EQ(fatals_.size(), 1u);
  EXPECT_NE(fatals_[0].message.find("allow_plaintext_login"), std::string::npos)
      << fatals_[0].message;
  EXPECT_EQ(server_.transcript(0), lines{}) << "the password never crossed the wire";
}

}  // namespace
}  // namespace mailroom::mailbox
