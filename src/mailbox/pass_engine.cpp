#include "mailbox/pass_engine.hpp"

#include <algorithm>
#include <cassert>
#include <utility>

namespace mailroom::mailbox {

struct pass_engine::batch {
  std::vector<std::uint32_t> granted;
  std::vector<std::uint32_t> already;  // delivered before, still unflagged
  std::set<std::uint32_t> wanted;      // granted, for checking arriving bodies
  std::set<std::uint32_t> received;    // bodies that arrived
  std::vector<std::uint32_t> delivered;
  std::vector<std::uint32_t> failed;
  std::vector<std::uint32_t> refused;  // set aside after the delivered are flagged
  std::size_t pending = 0;             // deliveries queued or running
  std::uint64_t held_bytes = 0;        // their bodies
  bool store_down = false;
};

pass_engine::pass_engine(const pass_settings& s, std::vector<std::uint32_t> uids)
    : s_(s), uids_(std::move(uids)) {
  s_.fetch_batch = std::max<std::size_t>(s_.fetch_batch, 1);
  s_.max_deliveries_in_flight = std::max<std::size_t>(s_.max_deliveries_in_flight, 1);
}

pass_engine::~pass_engine() = default;

void pass_engine::start_finish(std::unique_ptr<batch>& b, bool flag) {
  assert(!fin_);
  if (!b) return;
  fin_ = std::move(b);
  // After a failure of the inbox nothing more is flagged on this session.
  fin_flag_ = flag && !summary_.ec;
  fin_step_ = finish_step::wait;
}

bool pass_engine::step_finish(pass_action& out) {
  batch& b = *fin_;
  switch (fin_step_) {
    case finish_step::wait:
      if (b.pending > 0) {
        out = {pass_action::kind::wait, {}, false};
        return true;
      }
      fin_step_ = finish_step::release;
      [[fallthrough]];
    case finish_step::release: {
      // Failed, never sent (stopping, the target failed first), or not
      // returned by the fetch (expunged meanwhile, or the fetch was cut off).
      // Refused ones keep their claims until they are set aside, unless
      // nothing more is done on this session (then they are retried).
      std::vector<std::uint32_t> release = b.failed;
      std::set<std::uint32_t> sent(b.delivered.begin(), b.delivered.end());
      sent.insert(b.failed.begin(), b.failed.end());
      if (fin_flag_) sent.insert(b.refused.begin(), b.refused.end());
      for (const auto uid : b.granted)
        if (!sent.count(uid)) release.push_back(uid);
      fin_step_ = finish_step::record;
      if (!release.empty()) {
        fin_step_ = finish_step::awaiting_release;
        out = {pass_action::kind::release, std::move(release), false};
        return true;
      }
      [[fallthrough]];
    }
    case finish_step::record:
      // Recorded before flagging: if we die in between, whoever finds the
      // message unflagged flags it instead of delivering it again. This
      // holds when the inbox failed after some deliveries too: the next
      // session finds them recorded and only flags them.
      fin_step_ = finish_step::flag;
      if (!b.delivered.empty()) {
        fin_step_ = finish_step::awaiting_record;
        out = {pass_action::kind::record, b.delivered, false};
        return true;
      }
      [[fallthrough]];
    case finish_step::flag: {
      std::vector<std::uint32_t> to_flag = b.delivered;
      to_flag.insert(to_flag.end(), b.already.begin(), b.already.end());
      std::sort(to_flag.begin(), to_flag.end());
      if (!fin_flag_) return false;
      fin_step_ = finish_step::set_aside_refused;
      if (!to_flag.empty()) {
        // Only now, after the target acknowledged, may the message leave.
        fin_step_ = finish_step::awaiting_flag;
        out = {pass_action::kind::flag, std::move(to_flag), s_.delete_after_delivery};
        return true;
      }
      [[fallthrough]];
    }
    case finish_step::set_aside_refused:
      fin_step_ = finish_step::release_refused;
      if (!b.refused.empty() && !summary_.ec) {
        fin_step_ = finish_step::awaiting_set_aside;
        out = {pass_action::kind::set_aside, b.refused, false, aside_reason::refused};
        return true;
      }
      [[fallthrough]];
    case finish_step::release_refused:
      // Set aside (or not, if the inbox failed meanwhile: then retried).
      if (b.refused.empty()) return false;
      fin_step_ = finish_step::awaiting_release_refused;
      out = {pass_action::kind::release, b.refused, false};
      return true;
    case finish_step::awaiting_release:
    case finish_step::awaiting_set_aside:
    case finish_step::awaiting_release_refused:
    case finish_step::awaiting_record:
    case finish_step::awaiting_flag:
      assert(false && "next() called before the answer to the last action");
      break;
  }
  return false;
}

bool pass_engine::deliverable(const message_size& m) const {
  if (m.rejected || m.size > s_.max_message_size) return false;
  return m.arrived == 0 || m.arrived >= s_.oldest_arrival || m.age_exempt;
}

void pass_engine::end_finish() {
  // A failure of the target (not of a message): later batches would fail
  // the same way, so the pass ends and is retried after a backoff.
  if (!fin_->failed.empty()) {
    summary_.delivery_failed = true;
    stop_ = true;
  }
  if (fin_->store_down) stop_ = true;
  fin_.reset();
}

pass_action pass_engine::next() {
  pass_action out;
  for (;;) {
    if (fin_) {
      if (step_finish(out)) return out;
      end_finish();
      continue;
    }
    if (summary_.ec && phase_ != phase::failing && phase_ != phase::done) phase_ = phase::failing;
    switch (phase_) {
      case phase::loop_top: {
        if (next_ >= uids_.size() || stopping_ || stop_) {
          phase_ = phase::after_loop;
          continue;
        }
        // The target (or the store) already failed in this pass: finish the
        // previous batch, which ends the pass, rather than fetch more.
        if (target_failed_ || (prev_ && prev_->store_down)) {
          stop_ = true;
          start_finish(prev_, true);
          continue;
        }
        const std::size_t end = std::min(uids_.size(), next_ + s_.fetch_batch);
        phase_ = phase::awaiting_sizes;
        out = {pass_action::kind::fetch_sizes,
               std::vector<std::uint32_t>(uids_.begin() + next_, uids_.begin() + end), false};
        return out;
      }
      case phase::plan: {
        // Deliveries of the previous batch still running count against this
        // batch's budgets: when not even the first message this batch would
        // take fits beside them, the previous batch is finished first.
        phase_ = phase::plan_fetch;
        if (!prev_) continue;
        bool fits = prev_->pending < s_.fetch_batch;
        const std::size_t end = std::min(uids_.size(), next_ + s_.fetch_batch);
        for (std::size_t i = next_; fits && i < end; ++i) {
          auto it = std::find_if(sizes_.begin(), sizes_.end(),
                                 [&](const message_size& m) { return m.uid == uids_[i]; });
          if (it == sizes_.end() || !deliverable(*it)) continue;
          fits = prev_->held_bytes + it->size <= s_.fetch_bytes;
          break;
        }
        if (!fits) {
          notes_.push_back(
              {pass_note::kind::waiting_for_deliveries, prev_->pending, prev_->held_bytes});
          start_finish(prev_, true);
        }
        continue;
      }
      case phase::plan_fetch: {
        // A target that refuses at once has usually failed on the previous
        // batch by now: end the pass instead of fetching.
        if (target_failed_) {
          stop_ = true;
          start_finish(prev_, true);
          phase_ = phase::after_loop;
          continue;
        }
        const std::uint64_t held = prev_ ? prev_->held_bytes : 0;
        const std::size_t in_flight = prev_ ? prev_->pending : 0;
        const std::uint64_t budget = s_.fetch_bytes - std::min(held, s_.fetch_bytes);
        const std::size_t count_budget = s_.fetch_batch - std::min(in_flight, s_.fetch_batch);
        std::map<std::uint32_t, const message_size*> by_uid;
        for (const auto& m : sizes_) by_uid[m.uid] = &m;
        std::vector<std::uint32_t> oversize;
        std::vector<std::uint32_t> too_old;
        planned_.clear();
        planned_bytes_ = 0;
        const std::size_t end = std::min(uids_.size(), next_ + s_.fetch_batch);
        std::size_t consumed = 0;
        for (std::size_t i = next_; i < end; ++i) {
          auto it = by_uid.find(uids_[i]);
          if (it == by_uid.end()) {  // expunged meanwhile
            ++consumed;
            continue;
          }
          const message_size& m = *it->second;
          if (!deliverable(m)) {
            ++consumed;
            // Refused before: skipped until an operator reingests it.
            if (m.rejected) continue;
            if (m.size > s_.max_message_size) {
              if (!m.flagged_oversize) oversize.push_back(m.uid);
            } else if (!m.flagged_too_old) {
              too_old.push_back(m.uid);
            }
            continue;
          }
          // One message always fits, however large (up to max_message_size).
          if (!planned_.empty() &&
              (planned_bytes_ + m.size > budget || planned_.size() >= count_budget))
            break;
          ++consumed;
          planned_.push_back(m.uid);
          planned_bytes_ += m.size;
        }
        next_ += consumed;
        sizes_.clear();
        aside_.clear();
        if (!too_old.empty()) aside_.emplace_back(aside_reason::too_old, std::move(too_old));
        if (!oversize.empty()) aside_.emplace_back(aside_reason::oversize, std::move(oversize));
        phase_ = phase::set_aside_next;
        continue;
      }
      case phase::set_aside_next:
        if (aside_.empty()) {
          phase_ = phase::claim;
          continue;
        }
        phase_ = phase::awaiting_set_aside;
        out = {pass_action::kind::set_aside, aside_.back().second, false, aside_.back().first};
        return out;
      case phase::claim:
        if (planned_.empty()) {
          phase_ = phase::loop_top;
          continue;
        }
        phase_ = phase::awaiting_claims;
        out = {pass_action::kind::claim, planned_, false};
        return out;
      case phase::fetch:
        if (cur_->granted.empty()) {
          phase_ = phase::after_fetch;
          continue;
        }
        summary_.bytes_fetched += planned_bytes_;
        phase_ = phase::awaiting_bodies;
        out = {pass_action::kind::fetch_bodies, cur_->granted, false};
        return out;
      case phase::after_fetch:
        phase_ = phase::rotate;
        start_finish(prev_, true);
        continue;
      case phase::rotate:
        prev_ = std::move(cur_);
        phase_ = phase::loop_top;
        continue;
      case phase::after_loop:
        phase_ = phase::finish_pass;
        start_finish(prev_, true);
        continue;
      case phase::finish_pass:
        if (stop_ || target_failed_) summary_.delivery_failed = true;
        if (s_.expunge_deleted && !deleted_.empty()) {
          phase_ = phase::awaiting_expunge;
          out = {pass_action::kind::expunge, deleted_, false};
          return out;
        }
        phase_ = phase::done;
        continue;
      case phase::failing:
        // The inbox failed: what was delivered is recorded, the rest released,
        // nothing flagged. The previous batch first, then the current one.
        if (prev_) {
          start_finish(prev_, false);
          continue;
        }
        if (cur_) {
          start_finish(cur_, false);
          continue;
        }
        phase_ = phase::done;
        continue;
      case phase::done:
        out = {pass_action::kind::done, {}, false};
        return out;
      case phase::awaiting_sizes:
      case phase::awaiting_set_aside:
      case phase::awaiting_claims:
      case phase::awaiting_bodies:
      case phase::awaiting_expunge:
        assert(false && "next() called before the answer to the last action");
        out = {pass_action::kind::wait, {}, false};
        return out;
    }
  }
}

void pass_engine::sizes_fetched(boost::system::error_code ec,
                                const std::vector<message_size>& sizes) {
  assert(phase_ == phase::awaiting_sizes);
  if (ec) {
    summary_.ec = ec;
    phase_ = phase::failing;
    return;
  }
  sizes_ = sizes;
  phase_ = phase::plan;
}

void pass_engine::set_aside_done(boost::system::error_code ec, bool left_deleted) {
  if (fin_ && fin_step_ == finish_step::awaiting_set_aside) {
    // The refused ones of a batch being finished; their claims go next.
    if (ec) {
      summary_.ec = ec;
    } else {
      summary_.refused += fin_->refused.size();
      if (left_deleted && s_.expunge_deleted)
        deleted_.insert(deleted_.end(), fin_->refused.begin(), fin_->refused.end());
    }
    fin_step_ = finish_step::release_refused;
    return;
  }
  assert(phase_ == phase::awaiting_set_aside && !aside_.empty());
  if (ec) {
    summary_.ec = ec;
    phase_ = phase::failing;
    return;
  }
  const auto& done = aside_.back().second;
  if (left_deleted && s_.expunge_deleted) deleted_.insert(deleted_.end(), done.begin(), done.end());
  aside_.pop_back();
  phase_ = phase::set_aside_next;
}

void pass_engine::claimed(const std::vector<claim_answer>& answers) {
  assert(phase_ == phase::awaiting_claims && answers.size() == planned_.size());
  cur_ = std::make_unique<batch>();
  for (std::size_t i = 0; i < planned_.size() && i < answers.size(); ++i) {
    switch (answers[i]) {
      case claim_answer::granted:
        cur_->granted.push_back(planned_[i]);
        break;
      case claim_answer::delivered:
        cur_->already.push_back(planned_[i]);
        break;
      case claim_answer::taken:
        summary_.claimed_elsewhere = true;
        break;
      case claim_answer::unavailable:
        cur_->store_down = true;
        break;
    }
  }
  cur_->wanted.insert(cur_->granted.begin(), cur_->granted.end());
  phase_ = phase::fetch;
}

body_fate pass_engine::body_arrived(std::uint32_t uid, std::uint64_t bytes) {
  if (phase_ != phase::awaiting_bodies || !cur_) return body_fate::drop;
  batch& b = *cur_;
  // Not asked for, or sent twice: a confused server; ignore it.
  if (!b.wanted.count(uid) || !b.received.insert(uid).second) return body_fate::drop;
  // Not sent: its claim is released when the batch is finished, and it is
  // left for the next pass.
  if (stopping_ || target_failed_) return body_fate::drop;
  ++b.pending;
  b.held_bytes += bytes;
  deliveries_[uid] = {&b, bytes};
  if (running_ < s_.max_deliveries_in_flight && queue_.empty()) {
    ++running_;
    return body_fate::deliver;
  }
  queue_.push_back(uid);
  return body_fate::queue;
}

void pass_engine::bodies_fetched(boost::system::error_code ec) {
  assert(phase_ == phase::awaiting_bodies);
  if (ec) {
    summary_.ec = ec;
    phase_ = phase::failing;
    return;
  }
  phase_ = phase::after_fetch;
}

void pass_engine::released() {
  assert(fin_ && (fin_step_ == finish_step::awaiting_release ||
                  fin_step_ == finish_step::awaiting_release_refused));
  if (fin_step_ == finish_step::awaiting_release_refused) {
    fin_->refused.clear();  // done: step_finish() ends the batch
    fin_step_ = finish_step::release_refused;
    return;
  }
  fin_step_ = finish_step::record;
}

void pass_engine::recorded() {
  assert(fin_ && fin_step_ == finish_step::awaiting_record);
  fin_step_ = finish_step::flag;
}

void pass_engine::flagged(boost::system::error_code ec) {
  assert(fin_ && fin_step_ == finish_step::awaiting_flag);
  fin_step_ = finish_step::set_aside_refused;
  if (ec) {
    // Refused ones are not set aside on a failed session, only released.
    summary_.ec = ec;
    return;
  }
  summary_.delivered += fin_->delivered.size();
  summary_.already_delivered += fin_->already.size();
  if (s_.delete_after_delivery) {
    deleted_.insert(deleted_.end(), fin_->delivered.begin(), fin_->delivered.end());
    deleted_.insert(deleted_.end(), fin_->already.begin(), fin_->already.end());
  }
}

void pass_engine::expunged(boost::system::error_code ec) {
  assert(phase_ == phase::awaiting_expunge);
  if (ec) summary_.ec = ec;
  phase_ = phase::done;
}

void pass_engine::drop_queued(delivery_orders& out) {
  for (const auto uid : queue_) {
    auto it = deliveries_.find(uid);
    if (it == deliveries_.end()) continue;
    --it->second.owner->pending;
    it->second.owner->held_bytes -= it->second.bytes;
    deliveries_.erase(it);
    out.drop.push_back(uid);
  }
  queue_.clear();
}

delivery_orders pass_engine::delivery_done(std::uint32_t uid, delivery_outcome outcome) {
  delivery_orders out;
  auto it = deliveries_.find(uid);
  if (it == deliveries_.end()) return out;  // not running: ignore
  batch& b = *it->second.owner;
  --b.pending;
  b.held_bytes -= it->second.bytes;
  deliveries_.erase(it);
  --running_;
  switch (outcome) {
    case delivery_outcome::delivered:
      b.delivered.push_back(uid);
      break;
    case delivery_outcome::failed:
      b.failed.push_back(uid);
      target_failed_ = true;
      break;
    case delivery_outcome::refused:  // this message only: the pass goes on
      b.refused.push_back(uid);
      break;
    case delivery_outcome::not_sent:  // released with the unfetched
      break;
  }
  // The target failed: sending more now would fail the same way (and
  // hammer a target that is down). Shutting down: only what was already
  // sent is finished.
  if (target_failed_ || stopping_) {
    drop_queued(out);
    return out;
  }
  while (running_ < s_.max_deliveries_in_flight && !queue_.empty()) {
    out.start.push_back(queue_.front());
    queue_.pop_front();
    ++running_;
  }
  return out;
}

delivery_orders pass_engine::stop() {
  stopping_ = true;
  delivery_orders out;
  drop_queued(out);
  return out;
}

bool pass_engine::wait_over() const {
  return !fin_ || fin_step_ != finish_step::wait || fin_->pending == 0;
}

std::vector<pass_note> pass_engine::take_notes() {
  return std::exchange(notes_, {});
}

}  // namespace mailroom::mailbox
