// The parsed form of server responses (RFC 3501 §7, RFC 9051 §7): a small
// generic value tree rather than one struct per response type. Decoders in
// decode.hpp turn the few responses we act on into typed values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mailroom::imap {

/// One IMAP value: atom, number, string (quoted or literal, both unescaped),
/// NIL, or a parenthesised list.
struct value {
  enum class kind { atom, number, string, nil, list };
  kind k = kind::nil;
  /// Atom or string bytes. Atoms keep their case and any section brackets
  /// (e.g. "BODY[HEADER.FIELDS (FROM TO)]", "BODY[]<0>", "\Seen").
  std::string text;
  /// Only for kind::number (RFC 9051 number64 fits).
  std::uint64_t number = 0;
  /// Only for kind::list.
  std::vector<value> items;

  friend bool operator==(const value&, const value&) = default;
};

enum class status { ok, no, bad, bye, preauth };

/// A response code, the "[...]" after a status (RFC 3501 §7.1).
struct response_code {
  /// Upper-cased, e.g. "UIDVALIDITY", "CAPABILITY", "UIDNEXT", "ALERT".
  std::string name;
  /// Raw text after the name and one space, up to the closing ']'.
  std::string args;

  friend bool operator==(const response_code&, const response_code&) = default;
};

struct response {
  enum class kind { tagged, untagged, continuation } k = kind::untagged;
  /// Tagged only.
  std::string tag;
  /// Tagged responses, and untagged OK/NO/BAD/BYE/PREAUTH.
  std::optional<status> st;
  /// The "[...]" after a status.
  std::optional<response_code> code;
  /// Human-readable text after the status and code; the text of a continuation.
  std::string text;
  /// The message number in "* 3 EXISTS" or "* 5 FETCH (...)".
  std::optional<std::uint32_t> number;
  /// Upper-cased: EXISTS, EXPUNGE, RECENT, FETCH, SEARCH, CAPABILITY, FLAGS,
  /// LIST, ...; for status responses the status word ("OK", "BYE", ...).
  std::string keyword;
  /// The values after the keyword (FETCH: one list; SEARCH: numbers). Empty for
  /// status responses and continuations.
  std::vector<value> data;

  friend bool operator==(const response&, const response&) = default;
};

}  // namespace mailroom::imap
