// One delivery pass over a mailbox, as a state machine without I/O: the
// runner (mailbox::watcher for IMAP) feeds it what the inbox, the arbitration
// store and the delivery target answered, and it says what to do next. Every
// ordering of those answers is therefore a unit test (tests/unit/mailbox),
// with no socket, no timer and no fake target that must be "slow enough".
//
// A pass: the unseen messages found by the search are taken batch by batch.
// For each batch: sizes -> oversize ones set aside -> claims -> bodies, each
// body handed to the target as soon as it has arrived. A batch is finished
// (claims of what was not delivered released, deliveries recorded, then the
// delivered messages flagged) after the next batch has been fetched, so that
// the inbox works on batch N+1 while the target acknowledges batch N. Bodies
// still being delivered count against the next batch's budgets (fetch_bytes,
// fetch_batch); when not one more message fits beside them, the previous
// batch is finished first.
//
// The guarantees (README "Delivery guarantee") live here:
//  * a message is flagged only after the target acknowledged it, and only
//    after its delivery was recorded;
//  * at most max_deliveries_in_flight deliveries run at once, the others wait
//    in arrival order; once one failed because of the target, no more are
//    sent in this pass and the pass ends after finishing what is in flight;
//  * a failure of the inbox (a lost connection) ends the pass: what was
//    delivered is still recorded, nothing more is flagged.
#pragma once

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

namespace mailroom::mailbox {

struct pass_settings {
  std::size_t fetch_batch = 20;                     // messages fetched at once
  std::uint64_t fetch_bytes = 64ull * 1024 * 1024;  // bytes fetched (and held) at once
  std::uint64_t max_message_size = UINT64_MAX;      // larger: set aside, never fetched
  std::size_t max_deliveries_in_flight = SIZE_MAX;  // deliveries running at once
  // The message leaves the folder after delivery: the flag action carries
  // delete_too, and the inbox deletes it or moves it (after_delivery).
  bool delete_after_delivery = false;
  bool expunge_deleted = false;  // expunge what this pass deleted
  // Messages that arrived before this (seconds since the epoch, from the
  // pass's clock minus max_message_age) are set aside, not delivered.
  // INT64_MIN: no age limit.
  std::int64_t oldest_arrival = INT64_MIN;
};

// The size of one message, as the inbox reported it.
struct message_size {
  std::uint32_t uid = 0;
  std::uint64_t size = 0;
  bool flagged_oversize = false;  // oversize and already flagged (or reported)
  std::int64_t arrived = 0;       // seconds since the epoch; 0: unknown (never too old)
  bool flagged_too_old = false;   // too old and already flagged (or reported)
  bool age_exempt = false;        // reingested by an operator: delivered whatever its age
  bool rejected = false;          // refused by the target before: skipped
};

// Why messages are set aside (kept in the mailbox, out of later passes).
enum class aside_reason {
  oversize,  // larger than max_message_size; never fetched
  too_old,   // arrived before oldest_arrival; never fetched
  refused,   // the target refused it for good
};

// What the arbitration store answered for one message.
enum class claim_answer {
  granted,      // ours to deliver
  taken,        // another instance holds it
  delivered,    // delivered before but still unflagged: flag it only
  unavailable,  // the store cannot be reached: skip, retry next pass
};

// The next thing the runner must do. Command actions are answered with the
// matching call (fetch_sizes -> sizes_fetched, ...) before next() is called
// again; `wait` means only a delivery event (or stop()) can move the pass.
struct pass_action {
  enum class kind {
    fetch_sizes,   // -> sizes_fetched()
    set_aside,     // flag or move them, for `reason` -> set_aside_done()
    claim,         // -> claimed(), answers in the order of `uids`
    fetch_bodies,  // -> body_arrived() for each body, then bodies_fetched()
    release,       // release these claims -> released()
    record,        // record these deliveries -> recorded()
    flag,          // \Seen (and \Deleted when delete_too) -> flagged()
    expunge,       // -> expunged()
    wait,          // for deliveries to complete
    done,          // the pass is over: summary()
  };
  kind what = kind::done;
  std::vector<std::uint32_t> uids;
  bool delete_too = false;                       // flag: \Deleted as well
  aside_reason reason = aside_reason::oversize;  // set_aside: why
};

// How a delivery ended.
enum class delivery_outcome {
  delivered,  // acknowledged by the target
  failed,     // the target failed: no more are sent in this pass
  refused,    // the target refused this message for good: it is set aside,
              // and the pass goes on
  not_sent,   // the runner did not send it after all (the target failed or
              // shutdown began between the order and the start)
};

// What happens to a body that arrived.
enum class body_fate {
  deliver,  // hand it to the target now
  queue,    // hold it: it is handed over by a later delivery_done()
  drop,     // not to be delivered in this pass (stopping, target failed, not asked for)
};

// Deliveries that may start, or must not, after an event.
struct delivery_orders {
  std::vector<std::uint32_t> start;  // queued bodies to hand to the target now
  std::vector<std::uint32_t> drop;   // queued bodies to free without sending
};

// What the runner logs (decisions that are not actions).
struct pass_note {
  enum class kind {
    waiting_for_deliveries,  // the budgets are full: the previous batch is finished first
  };
  kind what;
  std::size_t in_flight = 0;
  std::uint64_t held_bytes = 0;
};

struct pass_summary {
  boost::system::error_code ec;       // the inbox failed: the session must end
  bool delivery_failed = false;       // the target or the store failed: back off
  std::size_t delivered = 0;          // acknowledged and flagged
  std::size_t already_delivered = 0;  // found recorded, flagged without delivery
  std::size_t refused = 0;            // refused by the target and set aside
  bool claimed_elsewhere = false;     // some messages were claimed by another instance
  std::uint64_t bytes_fetched = 0;    // bytes of the batches fetched (by their sizes)
};

class pass_engine {
 public:
  // `uids`: what the search found, in order (limit_max_unread already applied).
  pass_engine(const pass_settings& s, std::vector<std::uint32_t> uids);
  ~pass_engine();
  pass_engine(const pass_engine&) = delete;
  pass_engine& operator=(const pass_engine&) = delete;

  pass_action next();

  // Answers to command actions.
  void sizes_fetched(boost::system::error_code ec, const std::vector<message_size>& sizes);
  // `left_deleted`: they were copied and flagged \Deleted (no MOVE): they
  // leave the folder with this pass's expunge.
  void set_aside_done(boost::system::error_code ec, bool left_deleted);
  void claimed(const std::vector<claim_answer>& answers);
  body_fate body_arrived(std::uint32_t uid, std::uint64_t bytes);
  void bodies_fetched(boost::system::error_code ec);
  void released();
  void recorded();
  void flagged(boost::system::error_code ec);
  void expunged(boost::system::error_code ec);

  // Events at any time.
  delivery_orders delivery_done(std::uint32_t uid, delivery_outcome outcome);
  // Whether a delivery ordered a moment ago should still go out: not once the
  // target failed or shutdown began (then report it not_sent).
  bool may_send() const { return !target_failed_ && !stopping_; }
  // Shutdown: nothing more is fetched or sent; what runs is finished.
  delivery_orders stop();

  // After a `wait`: whether next() has something else to say now (the
  // deliveries it waited for are done). A runner wakes its waiting loop only
  // then, not on every completion.
  bool wait_over() const;

  std::vector<pass_note> take_notes();
  const pass_summary& summary() const { return summary_; }
  std::size_t deliveries_running() const { return running_; }
  bool target_failed() const { return target_failed_; }

 private:
  struct batch;
  enum class phase {
    loop_top,
    awaiting_sizes,
    plan,
    plan_fetch,
    set_aside_next,
    awaiting_set_aside,
    claim,
    awaiting_claims,
    fetch,
    awaiting_bodies,
    after_fetch,
    rotate,
    after_loop,
    finish_pass,
    awaiting_expunge,
    failing,
    done,
  };
  enum class finish_step {
    wait,
    release,
    awaiting_release,
    record,
    awaiting_record,
    flag,
    awaiting_flag,
    set_aside_refused,
    awaiting_set_aside,
    release_refused,
    awaiting_release_refused
  };

  void start_finish(std::unique_ptr<batch>& b, bool flag);
  // Runs the batch being finished one step; an action, or none once finished.
  bool step_finish(pass_action& out);
  void end_finish();
  void drop_queued(delivery_orders& out);
  bool deliverable(const message_size& m) const;

  pass_settings s_;
  std::vector<std::uint32_t> uids_;
  std::size_t next_ = 0;  // index into uids_ of the next chunk
  phase phase_ = phase::loop_top;
  bool stop_ = false;      // the target or the store failed: no more batches
  bool stopping_ = false;  // shutdown
  pass_summary summary_;

  std::vector<message_size> sizes_;     // of the chunk being planned
  std::vector<std::uint32_t> planned_;  // the batch to claim
  // Set aside before the batch is claimed: (reason, uids), in order.
  std::vector<std::pair<aside_reason, std::vector<std::uint32_t>>> aside_;
  std::uint64_t planned_bytes_ = 0;

  std::unique_ptr<batch> prev_;  // fetched, being delivered, not finished
  std::unique_ptr<batch> cur_;   // being claimed or fetched
  std::unique_ptr<batch> fin_;   // being finished
  bool fin_flag_ = false;
  finish_step fin_step_ = finish_step::wait;

  // The delivery gate, shared by the batches of the pass.
  struct delivery {
    batch* owner = nullptr;
    std::uint64_t bytes = 0;
  };
  std::map<std::uint32_t, delivery> deliveries_;  // queued or running
  std::deque<std::uint32_t> queue_;               // waiting for a free slot
  std::size_t running_ = 0;
  bool target_failed_ = false;

  std::vector<std::uint32_t> deleted_;  // flagged \Deleted in this pass
  std::vector<pass_note> notes_;
};

}  // namespace mailroom::mailbox
