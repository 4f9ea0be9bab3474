// Microsoft Graph mail, without I/O: the URLs of the calls a Graph inbox
// makes, the reading of a page of messages, and what an error answer means.
// The same calls as mail_room's Graph inbox (list unread, `$value`, PATCH
// isRead, DELETE), plus `$select`/`$top` so that a page lists ids and sizes
// only, and the message size from the MAPI property PR_MESSAGE_SIZE
// (0x0E08, an Integer), so that the oversize policy applies before a body is
// fetched.
//
// References: Graph REST v1.0 "List messages", "Get MIME content of a
// message", "Update message", "Delete message"; "Microsoft Graph throttling
// guidance" (429 with Retry-After); "Microsoft Graph error responses".
#pragma once

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mailroom::graph {

enum class graph_errc {
  token_rejected = 1,  // 401: renew the token once, then it is permanent
  throttled,           // 429 or 503: retry after the server's Retry-After
  unavailable,         // 5xx, or no answer: retry with backoff
  refused,             // another 4xx (no such user or folder, no permission): permanent
  bad_answer,          // a 2xx whose body is not what Graph sends
  not_found,           // 404 ErrorItemNotFound: the message is gone (deleted or moved meanwhile)
};
const boost::system::error_category& graph_category();
inline boost::system::error_code make_error_code(graph_errc e) {
  return {static_cast<int>(e), graph_category()};
}
// Whether waiting and trying again can help.
bool is_retriable(boost::system::error_code ec);

// `graph_endpoint` without a trailing slash, e.g. https://graph.microsoft.com.
// `user` is the mailbox's user (an address or an id), `folder` a well-known
// folder name (inbox) or a folder id. The page lists id, categories and the
// size property only.
std::string list_unread_url(std::string_view graph_endpoint, std::string_view user,
                            std::string_view folder, std::size_t page_size);
// The oldest unread message only, with its arrival time and subject (status).
std::string oldest_unread_url(std::string_view graph_endpoint, std::string_view user,
                              std::string_view folder);
std::string message_url(std::string_view graph_endpoint, std::string_view user,
                        std::string_view id);  // PATCH, DELETE
std::string message_value_url(std::string_view graph_endpoint, std::string_view user,
                              std::string_view id);  // GET: the raw MIME
// The body of the PATCH that marks a message read.
inline constexpr std::string_view mark_read_body = R"({"isRead":true})";
// Asked on every call, so that an id stays the same when the message moves
// (and is what arbitration and the jid are keyed by).
inline constexpr std::string_view prefer_immutable_ids = R"(IdType="ImmutableId")";

// A URL path segment: everything but RFC 3986 unreserved characters and the
// sub-delims and ":@" allowed in a segment is percent-encoded (§3.3).
std::string encode_path_segment(std::string_view s);

struct listed_message {
  std::string id;
  std::uint64_t size = 0;               // PR_MESSAGE_SIZE; 0 when Graph did not give it
  std::vector<std::string> categories;  // the set-aside keywords are kept here
  std::int64_t received = 0;            // receivedDateTime, seconds since the epoch; 0: unknown
};
// Graph's DateTimeOffset in UTC ("2026-12-05T09:30:12Z", with an optional
// fraction) -> seconds since the epoch.
std::optional<std::int64_t> parse_utc_time(std::string_view s);
struct message_page {
  std::vector<listed_message> messages;
  std::string next_link;  // "" on the last page
};
// A page of "List messages". `graph_endpoint` is where next_link must point:
// a link to anywhere else is refused (bad_answer), since the bearer token
// would be sent with it.
boost::system::result<message_page> parse_message_page(std::string_view body,
                                                       std::string_view graph_endpoint,
                                                       std::string& detail);

struct message_summary {
  std::string id;
  std::string received;  // receivedDateTime as Graph gives it (ISO 8601, UTC)
  std::string subject;
};
// The answer of oldest_unread_url: nothing when the folder has no unread mail.
boost::system::result<std::optional<message_summary>> parse_oldest_unread(std::string_view body,
                                                                          std::string& detail);

struct failure {
  boost::system::error_code ec;
  std::chrono::seconds retry_after{0};  // throttled: the server's wait (0 when not given)
  std::string detail;                   // status, Graph's error code and message
};
// A non-2xx answer. `retry_after` is the Retry-After header ("" when absent):
// delta-seconds (RFC 9110 §10.2.3); an HTTP date counts as absent.
failure classify(long status, std::string_view body, std::string_view retry_after);

}  // namespace mailroom::graph

template <>
struct boost::system::is_error_code_enum<mailroom::graph::graph_errc> : std::true_type {};
