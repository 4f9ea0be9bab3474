// Server byte streams recorded from Dovecot 2.3 (host names and dates
// shortened), and helpers that feed them to a parser in different splits.
#pragma once

#include "imap/proto/response_parser.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace mailroom::imap::test {

inline const std::string greeting =
    "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS "
    "AUTH=PLAIN] Dovecot (Debian) ready.\r\n";

inline const std::string login_ok =
    "A0001 OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY "
    "THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE "
    "UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH "
    "ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY "
    "PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE] Logged in\r\n";

inline const std::string login_failed =
    "A0001 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n";

inline const std::string select_inbox =
    "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
    "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n"
    "* 3 EXISTS\r\n"
    "* 0 RECENT\r\n"
    "* OK [UNSEEN 1] First unseen.\r\n"
    "* OK [UIDVALIDITY 1732790000] UIDs valid\r\n"
    "* OK [UIDNEXT 4] Predicted next UID\r\n"
    "* OK [HIGHESTMODSEQ 7] Highest\r\n"
    "A0002 OK [READ-WRITE] Select completed (0.002 + 0.000 + 0.001 secs).\r\n";

inline const std::string uid_search =
    "* SEARCH 1 2 3\r\n"
    "A0003 OK Search completed (0.001 + 0.000 secs).\r\n";

// A message whose bytes look like protocol: CRLFs, a literal announcement, a
// closing parenthesis and a tagged OK.
inline const std::string message1 =
    "From: alice@example.org\r\n"
    "To: incoming@example.org\r\n"
    "Subject: {5}\r\n"
    "\r\n"
    "see {5}\r\nhello) A0004 OK done\r\n";

inline const std::string header3 = "From: bob@example.org\r\n\r\n";

inline const std::string uid_fetch = "* 1 FETCH (UID 1 FLAGS (\\Seen) BODY[] {" +
                                     std::to_string(message1.size()) + "}\r\n" + message1 +
                                     ")\r\n"
                                     "* 2 FETCH (UID 2 FLAGS (\\Seen \\Deleted))\r\n"
                                     "* 3 FETCH (UID 3 BODY[HEADER.FIELDS (FROM TO)] {" +
                                     std::to_string(header3.size()) + "}\r\n" + header3 +
                                     " BODY[]<0> {3}\r\nabc)\r\n"
                                     "A0004 OK Fetch completed (0.003 + 0.000 + 0.002 secs).\r\n";

inline const std::string idle =
    "+ idling\r\n"
    "* 4 EXISTS\r\n"
    "* 1 RECENT\r\n"
    "A0005 OK Idle completed (0.001 + 10.000 + 10.000 secs).\r\n";

inline const std::string logout =
    "* BYE Logging out\r\n"
    "A0006 OK Logout completed (0.001 + 0.000 secs).\r\n";

inline std::string full_transcript() {
  return greeting + login_ok + select_inbox + uid_search + uid_fetch + idle + logout;
}

// Drains every complete response; fails the test on a parser error.
inline std::vector<response> drain(response_parser& p) {
  std::vector<response> out;
  for (;;) {
    auto r = p.next();
    EXPECT_TRUE(r.has_value()) << (r.has_value() ? "" : r.error().message());
    if (!r || !*r) return out;
    out.push_back(std::move(**r));
  }
}

inline std::vector<response> parse_whole(std::string_view wire, limits l = {}) {
  response_parser p(l);
  p.feed(wire);
  auto out = drain(p);
  EXPECT_EQ(p.buffered(), 0u);
  return out;
}

inline std::vector<response> parse_bytewise(std::string_view wire, limits l = {}) {
  response_parser p(l);
  std::vector<response> out;
  for (char c : wire) {
    p.feed(std::string_view(&c, 1));
    for (auto& r : drain(p)) out.push_back(std::move(r));
  }
  EXPECT_EQ(p.buffered(), 0u);
  return out;
}

// Feeds `wire` cut at the given offsets (sorted, each <= wire.size()).
inline std::vector<response> parse_split(std::string_view wire,
                                         const std::vector<std::size_t>& cuts, limits l = {}) {
  response_parser p(l);
  std::vector<response> out;
  std::size_t from = 0;
  for (std::size_t cut : cuts) {
    p.feed(wire.substr(from, cut - from));
    from = cut;
    for (auto& r : drain(p)) out.push_back(std::move(r));
  }
  p.feed(wire.substr(from));
  for (auto& r : drain(p)) out.push_back(std::move(r));
  return out;
}

// The error the parser ends with after being fed `wire` whole.
inline boost::system::error_code parse_error(std::string_view wire, limits l = {}) {
  response_parser p(l);
  p.feed(wire);
  for (;;) {
    auto r = p.next();
    if (!r) return r.error();
    if (!*r) return {};
  }
}

}  // namespace mailroom::imap::test
