#include "imap/proto/session.hpp"

#include "imap/proto/ascii.hpp"
#include "imap/proto/errc.hpp"
#include "imap/proto/value_reader.hpp"

#include <boost/assert.hpp>

#include <algorithm>
#include <utility>

namespace mailroom::imap {

session::session(limits l) : parser_(l) {}

void session::set_tag_prefix(std::string prefix) {
  BOOST_ASSERT(std::all_of(prefix.begin(), prefix.end(),
                           [](char c) { return c != '+' && detail::is_atom_char(c); }));
  prefix_ = std::move(prefix);
}

std::string session::submit(const command_builder& cmd) {
  std::string number = std::to_string(++counter_);
  if (number.size() < 4) number.insert(0, 4 - number.size(), '0');
  std::string tag = prefix_ + number;

  const bool is_idle = detail::ascii_iequals(cmd.name(), "IDLE");
  const bool behind_idle = idle_tag_.has_value();
  encoded_command enc = cmd.build(tag, literal_plus_);
  for (std::size_t i = 0; i < enc.segments.size(); ++i) {
    chunk c{std::move(enc.segments[i]), tag, gate::none, false};
    if (i == 0) {
      c.wait = behind_idle ? gate::idle_done : gate::none;
      c.starts_idle = is_idle;
    } else if (!literal_plus_) {
      c.wait = gate::literal;
    }
    queue_.push_back(std::move(c));
  }
  if (is_idle && !behind_idle) idle_tag_ = tag;
  pending_.push_back(tag);
  return tag;
}

void session::submit_idle_done() {
  if (!idle_tag_ || done_queued_) return;
  done_queued_ = true;
  // Right after the IDLE command itself (or first, if that is already
  // written), ahead of the commands held until the IDLE ends.
  auto pos = queue_.begin();
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->tag == *idle_tag_) pos = std::next(it);
  }
  queue_.insert(
      pos, chunk{"DONE\r\n", *idle_tag_, idle_continued_ ? gate::none : gate::idle_plus, false});
}

void session::submit_continuation_response(std::string_view line) {
  std::string bytes(line);
  bytes += "\r\n";
  queue_.push_front(chunk{std::move(bytes), {}, gate::none, false});
}

std::string session::take_output() {
  std::string out;
  while (!queue_.empty() && queue_.front().wait == gate::none) {
    out += queue_.front().bytes;
    queue_.pop_front();
  }
  return out;
}

bool session::has_pending(std::string_view tag) const {
  return std::find(pending_.begin(), pending_.end(), tag) != pending_.end();
}

void session::idle_completed() {
  idle_tag_.reset();
  idle_continued_ = false;
  done_queued_ = false;
  // Release the commands held behind the IDLE, up to and including the next
  // IDLE, which becomes the one in flight.
  for (chunk& c : queue_) {
    if (c.wait != gate::idle_done) continue;
    c.wait = gate::none;
    if (c.starts_idle) {
      idle_tag_ = c.tag;
      break;
    }
  }
}

boost::system::result<std::optional<session::event>> session::next_event() {
  if (error_) return error_;
  for (;;) {
    auto parsed = parser_.next();
    if (!parsed) return parsed.error();
    if (!*parsed) return std::nullopt;
    response& r = **parsed;

    switch (r.k) {
      case response::kind::continuation:
        // A segment ending in "{N}\r\n" has been written and its literal is
        // held at the front: this "+" is the go-ahead (RFC 3501 §7.5).
        if (!queue_.empty() && queue_.front().wait == gate::literal) {
          queue_.front().wait = gate::none;
          continue;
        }
        if (idle_tag_ && !idle_continued_) {
          idle_continued_ = true;
          for (chunk& c : queue_) {
            if (c.wait == gate::idle_plus) c.wait = gate::none;
          }
        }
        return event{event::kind::continuation, std::move(r)};

      case response::kind::tagged: {
        const auto it = std::find(pending_.begin(), pending_.end(), r.tag);
        if (it == pending_.end()) {
          // We are out of step with the server; nothing after this can be
          // attributed reliably.
          error_ = errc::unexpected_tag;
          return error_;
        }
        pending_.erase(it);
        // A command rejected before all its literals were sent must not send
        // the rest (RFC 3501 §7.5); an IDLE rejected or ended needs no DONE.
        std::erase_if(queue_, [&](const chunk& c) { return c.tag == r.tag; });
        if (idle_tag_ && *idle_tag_ == r.tag) idle_completed();
        return event{event::kind::tagged, std::move(r)};
      }

      case response::kind::untagged:
        return event{event::kind::untagged, std::move(r)};
    }
  }
}

}  // namespace mailroom::imap
