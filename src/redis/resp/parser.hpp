// Incremental RESP2 reply parser with no I/O: bytes go in with feed(), whole
// replies come out of next(). The client's read loop feeds whatever read_some
// returned; unit tests and the fuzzer feed bytes from memory.
//
// Cost is linear in the input however it is split: the CRLF search resumes
// where it stopped, bulk payloads are copied once into their reply as they
// arrive, and finished array elements are never parsed again.
#pragma once

#include "redis/resp/error.hpp"
#include "redis/resp/reply.hpp"

#include <boost/system/result.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mailroom::redis {

// Bounds on what a server may make us allocate. Redis itself caps bulk strings
// at 512 MiB (proto-max-bulk-len); the replies we read (OK, an integer, a
// sentinel's address pair, ROLE) are tiny, so much lower bounds are safe.
struct resp_limits {
  std::size_t max_bulk_length = 64 * 1024 * 1024;
  std::size_t max_array_elements = 1024 * 1024;
  std::size_t max_depth = 16;               // a top-level array is depth 1
  std::size_t max_line_length = 64 * 1024;  // type byte and CRLF excluded
};

class resp_parser {
 public:
  explicit resp_parser(resp_limits limits = {});

  // Appends bytes received from the server.
  void feed(std::string_view data);

  // The next complete reply; an empty optional when more bytes are needed.
  // After an error every later call returns the same error.
  boost::system::result<std::optional<reply>> next();

  // Bytes fed but not yet turned into a finished reply's storage.
  std::size_t buffered() const { return buf_.size() - pos_; }
  // True when no reply is partially parsed and no bytes are waiting.
  bool idle() const { return buffered() == 0 && stack_.empty() && !in_bulk_; }

 private:
  struct frame {
    reply value;  // kind::array; elements filled as they complete
    std::size_t expected = 0;
  };

  boost::system::error_code fail(resp_errc e);
  // Finds the end of the line starting at pos_; sets `line` and returns true
  // when a full CRLF-terminated line is buffered.
  bool take_line(std::string_view& line, boost::system::error_code& ec);
  // Attaches a finished value to its parent array or returns it as top level.
  std::optional<reply> complete(reply value);

  resp_limits limits_;
  std::string buf_;
  std::size_t pos_ = 0;   // first unconsumed byte of buf_
  std::size_t scan_ = 0;  // where the CR/LF search resumes (>= pos_ + 1)
  std::vector<frame> stack_;
  bool in_bulk_ = false;
  reply bulk_;                   // the bulk string being received
  std::size_t bulk_length_ = 0;  // its announced length
  boost::system::error_code error_;
};

}  // namespace mailroom::redis
