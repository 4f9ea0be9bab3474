#include "redis/resp/parser.hpp"

#include <algorithm>
#include <charconv>
#include <utility>

namespace mailroom::redis {

namespace {

// RESP2 numbers are an optional '-' and decimal digits filling the whole line.
bool parse_int64(std::string_view s, std::int64_t& out) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && end == s.data() + s.size();
}

// Compaction threshold: small buffers are not worth moving.
constexpr std::size_t compact_min = 4096;
// Arrays grow as elements arrive; a header alone may not make us allocate much.
constexpr std::size_t reserve_cap = 1024;
constexpr std::size_t reserve_bytes_cap = 1024 * 1024;

}  // namespace

resp_parser::resp_parser(resp_limits limits) : limits_(limits) {}

void resp_parser::feed(std::string_view data) {
  // Drop consumed bytes only when they are at least half the buffer, so each
  // byte is moved O(1) times on average and feeding stays linear.
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ >= compact_min && pos_ * 2 >= buf_.size()) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  buf_.append(data);
}

boost::system::error_code resp_parser::fail(resp_errc e) {
  error_ = make_error_code(e);
  return error_;
}

bool resp_parser::take_line(std::string_view& line, boost::system::error_code& ec) {
  const std::size_t start = pos_ + 1;  // after the type byte
  std::size_t i = std::max(start, pos_ + scan_);
  for (; i < buf_.size(); ++i) {
    const char c = buf_[i];
    if (c == '\n') {  // a bare LF: RESP lines end in CRLF and never contain LF
      ec = fail(resp_errc::malformed);
      return false;
    }
    if (c != '\r') {
      // Checked byte by byte so that the first offending byte decides the
      // error, whatever the read boundaries were.
      if (i + 1 - start > limits_.max_line_length) {
        ec = fail(resp_errc::line_too_long);
        return false;
      }
      continue;
    }
    if (i + 1 == buf_.size()) break;  // the LF has not arrived yet
    if (buf_[i + 1] != '\n') {
      ec = fail(resp_errc::malformed);
      return false;
    }
    line = std::string_view(buf_).substr(start, i - start);
    pos_ = i + 2;
    scan_ = 0;
    return true;
  }
  // Resume here next time, so a long line fed byte by byte is scanned once.
  scan_ = i - pos_;
  return false;
}

std::optional<reply> resp_parser::complete(reply value) {
  while (!stack_.empty()) {
    frame& top = stack_.back();
    top.value.elements.push_back(std::move(value));
    if (top.value.elements.size() < top.expected) return std::nullopt;
    value = std::move(top.value);
    stack_.pop_back();
  }
  return value;
}

boost::system::result<std::optional<reply>> resp_parser::next() {
  if (error_) return error_;
  for (;;) {
    if (in_bulk_) {
      const std::size_t need = bulk_length_ - bulk_.str.size();
      const std::size_t take = std::min(need, buf_.size() - pos_);
      bulk_.str.append(buf_, pos_, take);
      pos_ += take;
      if (bulk_.str.size() < bulk_length_ || buf_.size() - pos_ < 2) return std::nullopt;
      if (buf_[pos_] != '\r' || buf_[pos_ + 1] != '\n') return fail(resp_errc::malformed);
      pos_ += 2;
      in_bulk_ = false;
      if (auto top = complete(std::move(bulk_))) return top;
      continue;
    }

    if (pos_ == buf_.size()) return std::nullopt;
    const char type = buf_[pos_];
    // Reject a wrong type byte at once rather than after buffering a line.
    // RESP3 types (`_`, `#`, `%`, ...) are errors too: we never send HELLO 3.
    if (type != '+' && type != '-' && type != ':' && type != '$' && type != '*') {
      return fail(resp_errc::malformed);
    }
    std::string_view line;
    boost::system::error_code ec;
    if (!take_line(line, ec)) {
      if (ec) return ec;
      return std::nullopt;
    }

    reply value;
    switch (type) {
      case '+':
        value = reply::simple(std::string(line));
        break;
      case '-':
        value = reply::error(std::string(line));
        break;
      case ':': {
        std::int64_t n = 0;
        if (!parse_int64(line, n)) return fail(resp_errc::malformed);
        value = reply::number(n);
        break;
      }
      case '$': {
        std::int64_t n = 0;
        if (!parse_int64(line, n) || n < -1) return fail(resp_errc::malformed);
        if (n == -1) break;  // null bulk string: `value` is already null
        if (static_cast<std::uint64_t>(n) > limits_.max_bulk_length) {
          return fail(resp_errc::bulk_too_long);
        }
        bulk_ = reply::bulk({});
        bulk_length_ = static_cast<std::size_t>(n);
        // Memory follows the bytes that actually arrive, not the announced length.
        bulk_.str.reserve(std::min(bulk_length_, reserve_bytes_cap));
        in_bulk_ = true;
        continue;
      }
      case '*': {
        std::int64_t n = 0;
        if (!parse_int64(line, n) || n < -1) return fail(resp_errc::malformed);
        if (n == -1) break;  // null array
        if (static_cast<std::uint64_t>(n) > limits_.max_array_elements) {
          return fail(resp_errc::too_many_elements);
        }
        if (stack_.size() >= limits_.max_depth) return fail(resp_errc::too_deep);
        value = reply::array({});
        if (n == 0) break;
        frame f;
        f.value = std::move(value);
        f.expected = static_cast<std::size_t>(n);
        f.value.elements.reserve(std::min(f.expected, reserve_cap));
        stack_.push_back(std::move(f));
        continue;
      }
    }
    if (auto top = complete(std::move(value))) return top;
  }
}

}  // namespace mailroom::redis
