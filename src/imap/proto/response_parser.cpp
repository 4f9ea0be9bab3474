#include "imap/proto/response_parser.hpp"

#include "imap/proto/ascii.hpp"
#include "imap/proto/errc.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

namespace mailroom::imap {
namespace {

// Keywords and status words: atom characters, stopping before a section or
// response-code bracket.
std::string_view take_word(std::string_view& line) {
  std::size_t n = 0;
  while (n < line.size() && detail::is_value_atom_char(line[n]) && line[n] != ']') ++n;
  const std::string_view word = line.substr(0, n);
  line.remove_prefix(n);
  return word;
}

// tag = 1*<any ASTRING-CHAR except "+"> (RFC 3501 §9).
bool valid_tag(std::string_view tag) {
  if (tag.empty()) return false;
  return std::all_of(tag.begin(), tag.end(),
                     [](char c) { return c != '+' && (detail::is_atom_char(c) || c == ']'); });
}

std::optional<status> status_of(std::string_view upper) {
  if (upper == "OK") return status::ok;
  if (upper == "NO") return status::no;
  if (upper == "BAD") return status::bad;
  if (upper == "BYE") return status::bye;
  if (upper == "PREAUTH") return status::preauth;
  return std::nullopt;
}

bool parse_u32(std::string_view digits, std::uint32_t& out) {
  if (digits.empty()) return false;
  std::uint64_t n = 0;
  for (char c : digits) {
    if (!detail::is_digit(c)) return false;
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
    if (n > std::numeric_limits<std::uint32_t>::max()) return false;
  }
  out = static_cast<std::uint32_t>(n);
  return true;
}

// resp-text = ["[" resp-text-code "]" SP] text (RFC 3501 §9; RFC 9051 makes the
// text optional). The code's arguments are kept raw: its grammar depends on the
// code, and decoders parse the few we use.
boost::system::error_code parse_resp_text(std::string_view line, response& out) {
  while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
  if (!line.empty() && line.front() == '[') {
    std::size_t j = 1;
    bool quoted = false;
    for (; j < line.size(); ++j) {
      const char c = line[j];
      if (quoted) {
        if (c == '\\') {
          ++j;
        } else if (c == '"') {
          quoted = false;
        }
      } else if (c == '"') {
        quoted = true;
      } else if (c == ']') {
        break;
      }
    }
    if (j >= line.size()) return errc::malformed_response;  // unterminated "[..."
    std::string_view inner = line.substr(1, j - 1);
    const std::size_t sp = inner.find(' ');
    const std::string_view name = inner.substr(0, sp);
    if (name.empty()) return errc::malformed_response;
    response_code code;
    code.name = detail::ascii_upper(name);
    if (sp != std::string_view::npos) code.args.assign(inner.substr(sp + 1));
    out.code = std::move(code);
    line.remove_prefix(j + 1);
    if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
  }
  out.text.assign(line);
  return {};
}

}  // namespace

response_parser::response_parser(limits l) : limits_(l), values_(limits_) {}

std::size_t response_parser::buffered() const noexcept {
  return (buf_.size() - pos_) + held_bytes_;
}

boost::system::error_code response_parser::fail(boost::system::error_code ec) {
  error_ = ec;
  // Nothing more will be parsed; release what we hold.
  std::string().swap(buf_);
  pos_ = scan_ = 0;
  cur_ = {};
  values_.reset();
  held_bytes_ = 0;
  return ec;
}

void response_parser::compact() {
  if (pos_ == 0) return;
  if (pos_ == buf_.size()) {
    buf_.clear();
  } else if (pos_ >= buf_.size() - pos_) {
    // Erase only once the consumed prefix is at least as long as what remains,
    // so the copying stays linear in the input.
    buf_.erase(0, pos_);
  } else {
    return;
  }
  scan_ = scan_ > pos_ ? scan_ - pos_ : 0;
  pos_ = 0;
  // Do not keep the capacity a large literal once needed.
  constexpr std::size_t keep_capacity = 64 * 1024;
  if (buf_.capacity() > keep_capacity && buf_.size() < buf_.capacity() / 4) {
    std::string(buf_).swap(buf_);
  }
}

void response_parser::feed(std::string_view bytes) {
  if (error_) return;
  // Literal bytes with nothing buffered before them go straight to their value,
  // so a large literal is copied once.
  if (in_literal_ && pos_ == buf_.size() && literal_left_ > 0) {
    const std::size_t n = std::min(literal_left_, bytes.size());
    values_.literal_target().append(bytes.data(), n);
    literal_left_ -= n;
    held_bytes_ += n;
    bytes.remove_prefix(n);
  }
  compact();
  buf_.append(bytes);
}

boost::system::error_code response_parser::parse_first_line(std::string_view line,
                                                            std::string_view& rest,
                                                            bool& complete) {
  if (line.empty()) return errc::malformed_response;
  // continue-req = "+" SP (resp-text / base64); some servers omit the SP.
  if (line.front() == '+') {
    cur_.k = response::kind::continuation;
    line.remove_prefix(1);
    if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    cur_.text.assign(line);
    complete = true;
    return {};
  }
  if (line.front() == '*') {
    cur_.k = response::kind::untagged;
    if (line.size() < 3 || line[1] != ' ') return errc::malformed_response;
    line.remove_prefix(2);
    std::string_view word = take_word(line);
    if (word.empty()) return errc::malformed_response;
    if (std::all_of(word.begin(), word.end(), detail::is_digit)) {
      // message-data = nz-number SP ("EXPUNGE" / ("FETCH" SP msg-att)), and
      // mailbox-data's number SP ("EXISTS" / "RECENT").
      std::uint32_t n = 0;
      if (!parse_u32(word, n)) return errc::malformed_response;
      cur_.number = n;
      if (line.empty() || line.front() != ' ') return errc::malformed_response;
      line.remove_prefix(1);
      word = take_word(line);
      if (word.empty()) return errc::malformed_response;
      cur_.keyword = detail::ascii_upper(word);
      rest = line;
      return {};
    }
    cur_.keyword = detail::ascii_upper(word);
    if (auto st = status_of(cur_.keyword)) {
      cur_.st = st;
      complete = true;
      return parse_resp_text(line, cur_);
    }
    rest = line;
    return {};
  }
  // response-tagged = tag SP resp-cond-state CRLF
  cur_.k = response::kind::tagged;
  const std::size_t sp = line.find(' ');
  if (sp == std::string_view::npos || !valid_tag(line.substr(0, sp))) {
    return errc::malformed_response;
  }
  cur_.tag.assign(line.substr(0, sp));
  line.remove_prefix(sp + 1);
  cur_.keyword = detail::ascii_upper(take_word(line));
  const auto st = status_of(cur_.keyword);
  if (!st || *st == status::bye || *st == status::preauth) return errc::malformed_response;
  cur_.st = st;
  complete = true;
  return parse_resp_text(line, cur_);
}

boost::system::error_code response_parser::parse_piece(std::string_view piece) {
  if (first_line_done_) return values_.read(piece);
  first_line_done_ = true;
  std::string_view rest;
  bool complete = false;
  if (auto ec = parse_first_line(piece, rest, complete)) return ec;
  if (complete) return {};
  return values_.read(rest);
}

boost::system::result<std::optional<response>> response_parser::next() {
  if (error_) return error_;
  for (;;) {
    if (in_literal_) {
      const std::size_t n = std::min(literal_left_, buf_.size() - pos_);
      values_.literal_target().append(buf_, pos_, n);
      pos_ += n;
      literal_left_ -= n;
      held_bytes_ += n;
      if (literal_left_ > 0) return std::nullopt;
      in_literal_ = false;
      values_.literal_done();
    }
    scan_ = std::max(scan_, pos_);
    const auto* lf =
        static_cast<const char*>(std::memchr(buf_.data() + scan_, '\n', buf_.size() - scan_));
    const std::size_t budget = limits_.max_line_length - line_bytes_;
    if (lf == nullptr) {
      scan_ = buf_.size();
      // Fail as soon as the line cannot fit, not when its LF finally arrives.
      // One byte of slack for the CR of a CRLF.
      const std::size_t pending = buf_.size() - pos_;
      if (pending > budget && pending - budget > 1) return fail(errc::line_too_long);
      return std::nullopt;
    }
    const std::size_t next_pos = static_cast<std::size_t>(lf - buf_.data()) + 1;
    std::size_t end = next_pos - 1;
    if (end > pos_ && buf_[end - 1] == '\r') --end;  // CRLF; a bare LF is tolerated
    const std::string_view piece = std::string_view(buf_).substr(pos_, end - pos_);
    if (piece.size() > budget) return fail(errc::line_too_long);
    line_bytes_ += piece.size();
    held_bytes_ += next_pos - pos_;
    const auto ec = parse_piece(piece);
    pos_ = scan_ = next_pos;
    if (ec) return fail(ec);

    if (values_.literal_pending()) {
      literal_left_ = values_.literal_size();
      in_literal_ = true;
      // Bounded by max_literal_size, checked with the announcement.
      values_.literal_target().reserve(literal_left_);
      continue;
    }

    if (cur_.k != response::kind::continuation && !cur_.st) {
      auto data = values_.finish();
      if (!data) return fail(data.error());
      cur_.data = std::move(*data);
    }
    std::optional<response> out(std::move(cur_));
    cur_ = {};
    first_line_done_ = false;
    line_bytes_ = 0;
    held_bytes_ = 0;
    return out;
  }
}

}  // namespace mailroom::imap
