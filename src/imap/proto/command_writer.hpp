// Encoding client commands (RFC 3501 §6, grammar in §9) so that any user name,
// password or mailbox name is sent intact and cannot change the command's
// syntax (no CRLF injection).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mailroom::imap {

/// A command as byte segments. Each segment but the last ends with a literal
/// announcement ("{N}\r\n" or "{N+}\r\n") and the next segment starts with the
/// literal's N bytes. With synchronizing literals the next segment may be sent
/// only after the server's "+" continuation (RFC 3501 §7.5); with LITERAL+
/// (RFC 7888) all segments may be written back to back.
struct encoded_command {
  std::vector<std::string> segments;
};

/// How astring() sends a string (RFC 3501 §4.3, §9 astring).
enum class astring_form { atom, quoted, literal };

/// atom when every byte is ATOM-CHAR other than "[" (and it is not "NIL",
/// which some servers read as nil); quoted when it is 7-bit without CR, LF or
/// NUL; else literal.
astring_form classify_astring(std::string_view s) noexcept;

class command_builder {
 public:
  /// `name` is written as is, e.g. "LOGIN", "UID SEARCH", "UID FETCH".
  explicit command_builder(std::string_view name);

  /// Written as is; the caller guarantees the syntax, e.g. "UNSEEN",
  /// "(BODY.PEEK[] UID)", a UID set. Must not contain CR or LF.
  command_builder& atom(std::string_view raw);

  /// User data (user name, password, search key value): atom, quoted string or
  /// literal, whichever is needed (see classify_astring).
  command_builder& astring(std::string_view s);

  /// A mailbox name (RFC 3501 §5.1). "INBOX" in any case is sent as "INBOX".
  /// A name with non-ASCII bytes is taken as UTF-8 and sent in modified UTF-7
  /// (§5.1.3); an ASCII name is sent verbatim, so names already written in
  /// modified UTF-7 (as mail_room required) keep working. Invalid UTF-8 is sent
  /// as raw bytes in a literal.
  command_builder& mailbox(std::string_view name);

  /// "<tag> <name> <args...>\r\n", split into segments at each literal.
  encoded_command build(std::string_view tag, bool literal_plus) const;

  const std::string& name() const noexcept { return name_; }

 private:
  struct arg {
    std::string bytes;  // as written, or the literal's contents
    bool literal = false;
  };
  std::string name_;
  std::vector<arg> args_;
};

/// UID sets (RFC 3501 §9 sequence-set) for `uids`: sorted, duplicates and the
/// invalid UID 0 removed, runs compressed to ranges ("1:5,7,9:12"), and split
/// so that no set is longer than `max_chars`, keeping every command line short
/// whatever the backlog. `max_chars` below 21 (the longest range,
/// "4294967294:4294967295") is raised to 21.
std::vector<std::string> format_uid_sets(std::vector<std::uint32_t> uids,
                                         std::size_t max_chars = 1000);

}  // namespace mailroom::imap
