// The Sidekiq job that mail_room's sidekiq delivery pushes
// (lib/mail_room/delivery/sidekiq.rb), byte for byte as Ruby's JSON.generate
// writes it, so that GitLab's workers and any tooling that inspects queues see
// exactly what they saw before.
#pragma once

#include "common/json_string.hpp"
#include "common/logger.hpp"
#include "common/message.hpp"
#include "delivery/charset.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mailroom::delivery {

// 24 lowercase hex characters from OpenSSL's CSPRNG, like SecureRandom.hex(12).
// Used for the job id and the JWT nonce. Throws std::runtime_error if the
// CSPRNG fails (OpenSSL could not seed itself), which leaves no safe fallback.
std::string make_jid();

// The job id of a message: 24 lowercase hex characters (the shape of
// SecureRandom.hex(12), so nothing downstream notices) taken from the SHA-256
// of the server ("host:port"), account, folder, UIDVALIDITY and UID. A UID
// names one message for as long as the folder keeps its UIDVALIDITY (RFC 3501
// §2.3.1.1), and only on its server, so a message delivered twice (after a
// crash between the target's acknowledgement and the \Seen flag) carries the
// same jid both times and a consumer can drop it, while the same account and
// folder on another server never shares it. Pass the folder as
// config::canonical_folder() gives it.
std::string stable_jid(std::string_view server, std::string_view email, std::string_view folder,
                       std::uint32_t uidvalidity, std::uint32_t uid);
// The same for a Microsoft Graph message, named by its immutable id (which
// stays the same while the message is in the mailbox, moves included).
std::string stable_jid(std::string_view server, std::string_view email, std::string_view folder,
                       std::string_view message_id);

// {"class":"<worker>","args":["<utf8_body>"],"queue":"<queue>","jid":"<jid>","retry":false,"enqueued_at":<float>}
// Compact, keys in this order. `utf8_body` (and the other strings) MUST be valid
// UTF-8: convert with to_utf8()/as_utf8() first. `enqueued_at` (seconds since the
// epoch, Time.now.to_f) must be finite.
//
// Sized first, then written in one pass wherever the caller wants it: bodies
// can be megabytes, and the delivery writes the job straight into the Redis
// command that goes on the wire (no intermediate JSON string). The views must
// outlive the object.
class sidekiq_job {
 public:
  sidekiq_job(std::string_view worker, std::string_view queue, std::string_view utf8_body,
              std::string_view jid, double enqueued_at);
  // Exact length of the JSON text.
  std::size_t size() const { return size_; }
  // Writes exactly size() bytes at `out`; returns out + size().
  char* write(char* out) const;

 private:
  std::string_view worker_, queue_, body_, jid_;
  std::string when_;
  std::size_t size_;
};

// The same job as a new string.
std::string make_sidekiq_job(std::string_view worker, std::string_view queue,
                             std::string_view utf8_body, std::string_view jid, double enqueued_at);

// Time.now.to_f: seconds since the epoch with the clock's sub-second part, the
// job's "enqueued_at".
double epoch_seconds_now();

// The JSON string escaper (common/json_string.hpp), under the names this
// layer has always used.
using mailroom::append_json_string;
using mailroom::json_string_size;
using mailroom::write_json_string;

// Ruby's Float#to_s: the shortest digits that round-trip, fixed notation when
// the decimal point falls within the digits or up to 15 places after them
// ("100.0", "1795864094.3228915", "0.0001"), else scientific ("1.0e+16",
// "1.0e-05"). NaN and infinities give "NaN", "Infinity", "-Infinity" (which
// JSON.generate would refuse; make_sidekiq_job's callers never pass them).
std::string ruby_float_to_s(double value);

// The message's body as a job (Sidekiq's, que's) carries it: as_utf8() of it.
// When the charset could not be detected (mail_room would crash there) a
// warning says that the text may be garbled: {delivery_method, action, uid}.
std::string_view job_text(const mail_message& m, const char* delivery_method, log::logger& logger,
                          utf8_result& storage);

// mail_room's line for a job handed over, without context:
// {delivery_method: "Sidekiq"|"Que", action: "message pushed"}.
void log_job_pushed(log::logger& logger, const char* delivery_method);

}  // namespace mailroom::delivery
