// Incremental, I/O-free parser of IMAP server responses (RFC 3501 §7, RFC 9051
// §7; literal8 from RFC 3516, "{N+}" from RFC 7888). Bytes go in through feed(),
// complete responses come out of next(). It never touches a socket or a clock.
//
// Memory: the parser holds the unparsed input plus the values of the one
// response being built. Each line is scanned once and each literal byte copied
// once, so feeding a large literal in chunks costs linear time; consumed input
// is released as parsing proceeds.
#pragma once

#include "imap/proto/limits.hpp"
#include "imap/proto/types.hpp"
#include "imap/proto/value_reader.hpp"

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace mailroom::imap {

class response_parser {
 public:
  explicit response_parser(limits l = {});

  /// Appends received bytes, in pieces of any size (one byte at a time works).
  void feed(std::string_view bytes);

  /// The next complete response; std::nullopt when more bytes are needed; an
  /// error (errc) on a protocol violation or a limit. Errors are final: every
  /// later call returns the same error.
  boost::system::result<std::optional<response>> next();

  /// Bytes held: unparsed input plus the parts of the response being built.
  std::size_t buffered() const noexcept;

  const limits& get_limits() const noexcept { return limits_; }

 private:
  boost::system::error_code parse_piece(std::string_view piece);
  boost::system::error_code parse_first_line(std::string_view line, std::string_view& rest,
                                             bool& complete);
  boost::system::error_code fail(boost::system::error_code ec);
  void compact();

  // permanent
  limits limits_;
  detail::value_reader values_;
  boost::system::error_code error_;  // sticky once set

  // input: buf_[0, pos_) is consumed; buf_[pos_, scan_) is known to hold no LF
  // (scan_ lags behind pos_ after literal bytes, which are never scanned).
  std::string buf_;
  std::size_t pos_ = 0;
  std::size_t scan_ = 0;

  // reset after each response
  response cur_;
  bool first_line_done_ = false;
  std::size_t line_bytes_ = 0;    // counted against max_line_length
  std::size_t held_bytes_ = 0;    // consumed input now stored in cur_ / values_
  std::size_t literal_left_ = 0;  // > 0 while reading literal bytes
  bool in_literal_ = false;
};

}  // namespace mailroom::imap
