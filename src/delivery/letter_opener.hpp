// mail_room's letter_opener delivery (lib/mail_room/delivery/letter_opener.rb):
// a development convenience that writes each message into its own directory
// under `location` instead of handing it to an application:
//
//   <location>/<UTC time>_<random hex>/message.eml   the raw bytes, unchanged
//   <location>/<UTC time>_<random hex>/index.html    a page to open in a browser
//
// The page shows From, To, Cc, Subject and Date (RFC 2047 decoded), the first
// text/plain part (transfer encoding decoded, converted to UTF-8), or the
// source of the first text/html part when there is no plain text, the names
// and sizes of the attachments, and a link to message.eml. Everything taken
// from the message is HTML-escaped: the mail's own HTML is never rendered.
//
// Any file system error (location not writable, disk full) fails the delivery
// with errc::target_unavailable, so the message stays in the mailbox and is
// tried again; the partly written directory is removed first. Both files are
// written under a temporary name and renamed, so a reader never sees half a
// file. The files are small and written with plain blocking calls on the
// calling thread.
#pragma once

#include "common/logger.hpp"
#include "config/model.hpp"
#include "delivery/deliverer.hpp"

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace mailroom::delivery {

// Bounds on the work done for index.html, however large or odd the message.
inline constexpr std::size_t letter_opener_max_text = 64 * 1024;    // UTF-8 bytes of body text
inline constexpr std::size_t letter_opener_max_attachments = 1000;  // names listed
inline constexpr std::size_t letter_opener_max_header = 16 * 1024;  // bytes per header shown

class letter_opener_deliverer : public deliverer {
 public:
  letter_opener_deliverer(const config::letter_opener_options& opts,
                          std::shared_ptr<log::logger> logger);

  const char* class_name() const override { return "MailRoom::Delivery::LetterOpener"; }
  boost::asio::awaitable<result> deliver(const mail_message& m) override;

 private:
  std::string location_;
  std::shared_ptr<log::logger> logger_;
};

// The index.html written next to message.eml for `raw_message`: a complete
// UTF-8 HTML document. Never fails on malformed input (no headers, broken
// MIME, invalid UTF-8, binary data, empty input); shows what could be decoded.
std::string letter_opener_index_html(std::string_view raw_message);

}  // namespace mailroom::delivery
