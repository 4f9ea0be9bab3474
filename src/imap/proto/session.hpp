// The I/O-free command pipeline of one IMAP connection: allocates tags, holds
// the parts of a command that must wait for a "+" continuation (synchronizing
// literals, RFC 3501 §7.5; the DONE of an IDLE, RFC 2177), and attributes
// server responses to the commands in flight. The caller moves bytes:
// take_output() -> socket, socket -> receive(), then drains next_event().
#pragma once

#include "imap/proto/command_writer.hpp"
#include "imap/proto/limits.hpp"
#include "imap/proto/response_parser.hpp"
#include "imap/proto/types.hpp"

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mailroom::imap {

class session {
 public:
  explicit session(limits l = {});

  /// Tags are "<prefix><counter>", the counter zero-padded to 4 digits
  /// ("A0001", "A0002", ...). The prefix must be ATOM-CHARs other than "+";
  /// change it only before the first submit().
  void set_tag_prefix(std::string prefix);

  /// Use non-synchronizing literals ("{N+}", RFC 7888) for commands submitted
  /// from now on; call after CAPABILITY shows LITERAL+.
  void set_literal_plus(bool on) noexcept { literal_plus_ = on; }

  /// Queues a command and returns its tag. Commands submitted while an IDLE is
  /// in flight are held until the IDLE's tagged reply (a command sent during
  /// IDLE would be taken as a bad DONE, RFC 2177 §3); call submit_idle_done()
  /// to end the IDLE. One IDLE at a time: a later IDLE waits like any command.
  std::string submit(const command_builder& cmd);

  /// Queues "DONE\r\n" to end the IDLE in flight (RFC 2177). It is written
  /// only after the server's "+" for the IDLE and before any command held
  /// behind the IDLE. No effect without an IDLE in flight or if DONE is
  /// already queued.
  void submit_idle_done();

  /// Queues `line` and CRLF as the answer to a "+" continuation of the
  /// command in flight, e.g. a SASL response to AUTHENTICATE (RFC 3501
  /// §6.2.2). Written at once, ahead of any segment still waiting. `line`
  /// must not contain CR or LF.
  void submit_continuation_response(std::string_view line);

  /// Bytes to write now. Segments waiting for a "+" or for an IDLE to end are
  /// held back and come out of a later call.
  std::string take_output();

  /// Bytes read from the socket.
  void receive(std::string_view bytes) { parser_.feed(bytes); }

  struct event {
    enum class kind { untagged, continuation, tagged } k = kind::untagged;
    response resp;
  };

  /// The next response, attributed: std::nullopt when more bytes are needed.
  /// A "+" that releases a held literal segment is consumed here; any other
  /// "+" (IDLE's "+ idling", or one nobody waits for) is reported, and the
  /// caller decides. A tagged reply for an unknown or completed tag is
  /// errc::unexpected_tag. Errors are final.
  boost::system::result<std::optional<event>> next_event();

  /// True while `tag` waits for its tagged reply.
  bool has_pending(std::string_view tag) const;
  std::size_t pending_count() const noexcept { return pending_.size(); }

  /// An IDLE is in flight and the server has answered it with "+".
  bool idling() const noexcept { return idle_tag_.has_value() && idle_continued_; }

  /// Received bytes held by the parser, for memory accounting.
  std::size_t buffered() const noexcept { return parser_.buffered(); }

 private:
  // What a queued segment waits for before it may be written.
  enum class gate {
    none,
    literal,    // the "+" for the literal announced at the end of the previous segment
    idle_plus,  // DONE: the "+" answering the IDLE
    idle_done,  // a command submitted during IDLE: the IDLE's tagged reply
  };
  struct chunk {
    std::string bytes;
    std::string tag;
    gate wait = gate::none;
    bool starts_idle = false;
  };

  void idle_completed();

  // permanent
  response_parser parser_;
  std::string prefix_ = "A";
  bool literal_plus_ = false;
  boost::system::error_code error_;  // sticky once set

  // command pipeline
  std::uint64_t counter_ = 0;
  std::deque<chunk> queue_;
  std::vector<std::string> pending_;  // tags awaiting their tagged reply, in order

  // the IDLE in flight, if any
  std::optional<std::string> idle_tag_;
  bool idle_continued_ = false;  // its "+" arrived
  bool done_queued_ = false;
};

}  // namespace mailroom::imap
