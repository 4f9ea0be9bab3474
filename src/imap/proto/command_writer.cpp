#include "imap/proto/command_writer.hpp"

#include "imap/proto/ascii.hpp"
#include "imap/proto/mailbox_name.hpp"
#include "imap/proto/value_reader.hpp"

#include <boost/assert.hpp>

#include <algorithm>
#include <string>

namespace mailroom::imap {

astring_form classify_astring(std::string_view s) noexcept {
  if (s.empty()) return astring_form::quoted;
  bool atom = !detail::ascii_iequals(s, "NIL");
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    // quoted = DQUOTE *QUOTED-CHAR DQUOTE; QUOTED-CHAR is any 7-bit TEXT-CHAR
    // (CHAR except CR and LF, and CHAR excludes NUL).
    if (u >= 0x80 || u == '\r' || u == '\n' || u == 0) return astring_form::literal;
    // "[" is ATOM-CHAR, but parsers that read FETCH's BODY[...] take it as the
    // start of a section; two quotes are cheaper than finding out.
    atom = atom && detail::is_atom_char(c) && c != '[';
  }
  return atom ? astring_form::atom : astring_form::quoted;
}

command_builder::command_builder(std::string_view name) : name_(name) {}

command_builder& command_builder::atom(std::string_view raw) {
  BOOST_ASSERT(raw.find_first_of("\r\n") == std::string_view::npos);
  args_.push_back({std::string(raw), false});
  return *this;
}

command_builder& command_builder::astring(std::string_view s) {
  switch (classify_astring(s)) {
    case astring_form::atom:
      args_.push_back({std::string(s), false});
      break;
    case astring_form::quoted: {
      std::string q;
      q.reserve(s.size() + 2);
      q.push_back('"');
      for (char c : s) {
        if (c == '"' || c == '\\') q.push_back('\\');
        q.push_back(c);
      }
      q.push_back('"');
      args_.push_back({std::move(q), false});
      break;
    }
    case astring_form::literal:
      args_.push_back({std::string(s), true});
      break;
  }
  return *this;
}

command_builder& command_builder::mailbox(std::string_view name) {
  // mailbox = "INBOX" / astring; INBOX is case-insensitive (RFC 3501 §5.1).
  if (detail::ascii_iequals(name, "INBOX")) return astring("INBOX");
  const bool ascii = std::all_of(name.begin(), name.end(),
                                 [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (ascii) return astring(name);
  if (auto encoded = encode_mailbox_utf7(name)) return astring(*encoded);
  return astring(name);
}

encoded_command command_builder::build(std::string_view tag, bool literal_plus) const {
  encoded_command out;
  std::string cur;
  cur.append(tag).append(" ").append(name_);
  for (const arg& a : args_) {
    cur.push_back(' ');
    if (!a.literal) {
      cur.append(a.bytes);
      continue;
    }
    // literal = "{" number ["+"] "}" CRLF *CHAR8 (RFC 3501 §4.3, RFC 7888 §3).
    cur.append("{").append(std::to_string(a.bytes.size()));
    cur.append(literal_plus ? "+}\r\n" : "}\r\n");
    out.segments.push_back(std::move(cur));
    cur = a.bytes;
  }
  cur.append("\r\n");
  out.segments.push_back(std::move(cur));
  return out;
}

std::vector<std::string> format_uid_sets(std::vector<std::uint32_t> uids, std::size_t max_chars) {
  constexpr std::size_t longest_range = 21;
  max_chars = std::max(max_chars, longest_range);
  std::sort(uids.begin(), uids.end());
  uids.erase(std::unique(uids.begin(), uids.end()), uids.end());
  // nz-number: UID 0 does not exist, and a set containing it is a syntax error.
  uids.erase(std::remove(uids.begin(), uids.end(), 0u), uids.end());

  std::vector<std::string> sets;
  std::string cur;
  for (std::size_t i = 0; i < uids.size();) {
    std::size_t j = i;
    while (j + 1 < uids.size() && uids[j + 1] == uids[j] + 1) ++j;
    std::string piece = std::to_string(uids[i]);
    if (j > i) piece.append(":").append(std::to_string(uids[j]));
    if (!cur.empty() && cur.size() + 1 + piece.size() > max_chars) {
      sets.push_back(std::move(cur));
      cur.clear();
    }
    if (!cur.empty()) cur.push_back(',');
    cur.append(piece);
    i = j + 1;
  }
  if (!cur.empty()) sets.push_back(std::move(cur));
  return sets;
}

}  // namespace mailroom::imap
