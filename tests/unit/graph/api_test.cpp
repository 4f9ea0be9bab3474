#include "graph/api.hpp"

#include <gtest/gtest.h>

namespace mailroom::graph {
namespace {

constexpr std::string_view graph = "https://graph.microsoft.com";

TEST(GraphUrls, ListUnreadAsksForIdsAndSizesOnly) {
  EXPECT_EQ(list_unread_url(graph, "incoming@example.com", "inbox", 50),
            "https://graph.microsoft.com/v1.0/users/incoming@example.com/mailFolders/inbox/"
            "messages?$filter=receivedDateTime%20ge%201900-01-01T00:00:00Z%20and%20isRead%20eq%20"
            "false&$orderby=receivedDateTime%20asc&$select=id,categories,receivedDateTime"
            "&$expand=singleValueExtendedProperties($filter=id%20eq%20'Integer%200x0E08')"
            "&$top=50");
}

TEST(GraphUrls, MessageUrlsEncodeTheId) {
  // Immutable ids are base64 with '/', '+' and '=' in them.
  EXPECT_EQ(message_url(graph, "a@b.c", "AAk/AD+b=="),
            "https://graph.microsoft.com/v1.0/users/a@b.c/messages/AAk%2FAD+b==");
  EXPECT_EQ(message_value_url(graph, "a@b.c", "x"),
            "https://graph.microsoft.com/v1.0/users/a@b.c/messages/x/$value");
}

TEST(GraphUrls, PathSegmentsCannotEscape) {
  EXPECT_EQ(encode_path_segment("../a b?c#d%"), "..%2Fa%20b%3Fc%23d%25");
  EXPECT_EQ(encode_path_segment("\xc3\xa9"), "%C3%A9");
}

TEST(GraphPage, ReadsIdsSizesAndTheNextLink) {
  std::string detail;
  const auto page = parse_message_page(R"({
    "@odata.context": "x",
    "value": [
      {"id": "m1", "singleValueExtendedProperties": [{"id": "Integer 0x0E08", "value": "1234"}]},
      {"id": "m2"},
      {"id": "m3", "singleValueExtendedProperties": [{"id": "Integer 0x0E08", "value": 99}]}
    ],
    "@odata.nextLink": "https://graph.microsoft.com/v1.0/users/a/mailFolders/inbox/messages?$skip=3"
  })",
                                       graph, detail);
  ASSERT_TRUE(page) << detail;
  ASSERT_EQ(page->messages.size(), 3u);
  EXPECT_EQ(page->messages[0].id, "m1");
  EXPECT_EQ(page->messages[0].size, 1234u);
  EXPECT_EQ(page->messages[1].size, 0u);
  EXPECT_EQ(page->messages[2].size, 99u);
  EXPECT_EQ(page->next_link,
            "https://graph.microsoft.com/v1.0/users/a/mailFolders/inbox/messages?$skip=3");
}

TEST(GraphPage, TheSizePropertyIsRecognisedInGraphsSpellingAndCategoriesAreRead) {
  std::string detail;
  const auto page = parse_message_page(R"({"value": [
      {"id": "m1", "categories": ["Red", "$MailroomOversize", 7],
       "singleValueExtendedProperties": [{"id": "Integer 0xe08", "value": "5"}]},
      {"id": "m2", "singleValueExtendedProperties": [{"id": "String 0xe08", "value": "6"},
                                                     {"id": "Integer 0xe0800", "value": "7"},
                                                     {"id": "Integer 0x", "value": "8"}]}
    ]})",
                                       graph, detail);
  ASSERT_TRUE(page) << detail;
  ASSERT_EQ(page->messages.size(), 2u);
  EXPECT_EQ(page->messages[0].size, 5u);
  EXPECT_EQ(page->messages[0].categories, (std::vector<std::string>{"Red", "$MailroomOversize"}));
  EXPECT_EQ(page->messages[1].size, 0u);
  EXPECT_TRUE(page->messages[1].categories.empty());
}

TEST(GraphOldestUnread, ReadsTheFirstMessageOrNothing) {
  EXPECT_EQ(oldest_unread_url(graph, "a@example.com", "inbox"),
            "https://graph.microsoft.com/v1.0/users/a@example.com/mailFolders/inbox/messages?"
            "$filter=receivedDateTime%20ge%201900-01-01T00:00:00Z%20and%20isRead%20eq%20false"
            "&$orderby=receivedDateTime%20asc&$select=id,receivedDateTime,subject&$top=1");
  std::string detail;
  auto r = parse_oldest_unread(
      R"({"value":[{"id":"m1","receivedDateTime":"2026-12-01T10:00:00Z","subject":"Hi"}]})",
      detail);
  ASSERT_TRUE(r) << detail;
  ASSERT_TRUE(*r);
  EXPECT_EQ((*r)->id, "m1");
  EXPECT_EQ((*r)->received, "2026-12-01T10:00:00Z");
  EXPECT_EQ((*r)->subject, "Hi");
  r = parse_oldest_unread(R"({"value":[]})", detail);
  ASSERT_TRUE(r);
  EXPECT_FALSE(*r);
  for (const char* bad : {R"({"value":[{"id":""}]})", R"({"value":{}})", "[]", "x"}) {
    detail.clear();
    r = parse_oldest_unread(bad, detail);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error(), graph_errc::bad_answer);
    EXPECT_FALSE(detail.empty());
  }
}

TEST(GraphPage, LastPageHasNoNextLink) {
  std::string detail;
  const auto page = parse_message_page(R"({"value": []})", graph, detail);
  ASSERT_TRUE(page);
  EXPECT_TRUE(page->messages.empty());
  EXPECT_TRUE(page->next_link.empty());
}

TEST(GraphPage, ANextLinkElsewhereIsRefused) {
  std::string detail;
  const auto page = parse_message_page(
      R"({"value": [], "@odata.nextLink": "https://graph.microsoft.com.evil.example/v1.0/x"})",
      graph, detail);
  ASSERT_FALSE(page);
  EXPECT_EQ(page.error(), graph_errc::bad_answer);
  EXPECT_NE(detail.find("outside"), std::string::npos);
}

TEST(GraphPage, MalformedPagesAreErrorsNotCrashes) {
  for (const std::string_view body :
       {"", "null", "[]", "{", R"({"value": 3})", R"({"value": [3]})", R"({"value": [{"id": 7}]})",
        R"({"value": [{"id": ""}]})", "\xff\xfe"}) {
    std::string detail;
    const auto page = parse_message_page(body, graph, detail);
    ASSERT_FALSE(page) << body;
    EXPECT_EQ(page.error(), graph_errc::bad_answer);
    EXPECT_FALSE(detail.empty());
  }
}

TEST(GraphErrors, ThrottlingHonoursRetryAfter) {
  const auto f =
      classify(429, R"({"error":{"code":"TooManyRequests","message":"slow down"}})", "7");
  EXPECT_EQ(f.ec, graph_errc::throttled);
  EXPECT_EQ(f.retry_after, std::chrono::seconds(7));
  EXPECT_EQ(f.detail, "HTTP 429 TooManyRequests: slow down");
  EXPECT_TRUE(is_retriable(f.ec));
  EXPECT_EQ(classify(503, "", "").retry_after, std::chrono::seconds(0));
  // An HTTP date is not a number of seconds: treated as absent.
  EXPECT_EQ(classify(429, "", "Wed, 21 Oct 2026 07:28:00 GMT").retry_after,
            std::chrono::seconds(0));
  EXPECT_EQ(classify(429, "", "999999").retry_after, std::chrono::seconds(3600));
}

TEST(GraphErrors, ExpiredTokenIsRejectedToken) {
  const auto f = classify(
      401,
      R"({"error":{"code":"InvalidAuthenticationToken","message":"Lifetime validation failed"}})",
      "");
  EXPECT_EQ(f.ec, graph_errc::token_rejected);
  EXPECT_EQ(f.detail, "HTTP 401 InvalidAuthenticationToken: Lifetime validation failed");
}

TEST(GraphErrors, ServerErrorsAreRetriedOtherClientErrorsAreNot) {
  EXPECT_EQ(classify(500, "oops", "").ec, graph_errc::unavailable);
  EXPECT_EQ(classify(502, "", "").ec, graph_errc::unavailable);
  EXPECT_EQ(classify(500, "oops", "").detail, "HTTP 500: oops");
  const auto f =
      classify(403, R"({"error":{"code":"ErrorAccessDenied","message":"Access is denied."}})", "");
  EXPECT_EQ(f.ec, graph_errc::refused);
  EXPECT_FALSE(is_retriable(f.ec));
  EXPECT_EQ(classify(404, R"({"error":{"code":"ErrorItemNotFound"}})", "").ec,
            graph_errc::not_found);
  EXPECT_FALSE(is_retriable(graph_errc::not_found));
  EXPECT_EQ(classify(404, R"({"error":{"code":"ErrorInvalidUser"}})", "").ec, graph_errc::refused);
  EXPECT_EQ(classify(404, R"({"error":{"code":"ErrorInvalidUser"}})", "").detail,
            "HTTP 404 ErrorInvalidUser");
}

TEST(GraphErrors, DetailIsBoundedAndPrintable) {
  const std::string body = R"({"error":{"code":"\u0001)" + std::string(500, 'c') +
                           R"(","message":")" + std::string(500, 'm') + R"(\nx"}})";
  const auto f = classify(400, body, "");
  EXPECT_LE(f.detail.size(), 300u);
  for (const char c : f.detail) EXPECT_GE(static_cast<unsigned char>(c), 0x20);
}

TEST(GraphTime, ReceivedDateTimeIsSecondsSinceTheEpoch) {
  EXPECT_EQ(parse_utc_time("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_utc_time("2026-12-05T09:30:12Z"), 1796463012);
  EXPECT_EQ(parse_utc_time("2000-02-29T23:59:59.1234567Z"), 951868799);
  EXPECT_EQ(parse_utc_time("1969-12-31T23:59:59Z"), -1);
  for (const char* bad : {"", "2026-12-05", "2026-12-05T09:30:12", "2026-13-05T09:30:12Z",
                          "2026-12-05T09:30:12+01:00", "2026-12-05T09:30:12Zjunk",
                          "2026-12-05 09:30:12Z", "20x6-12-05T09:30:12Z"})
    EXPECT_FALSE(parse_utc_time(bad).has_value()) << bad;
}

TEST(GraphPage, ReceivedDateTimeIsRead) {
  std::string detail;
  const auto page = parse_message_page(
      R"({"value":[{"id":"a","receivedDateTime":"2026-12-05T09:30:12Z"},{"id":"b"}]})", graph,
      detail);
  ASSERT_TRUE(page) << detail;
  ASSERT_EQ(page->messages.size(), 2u);
  EXPECT_EQ(page->messages[0].received, 1796463012);
  EXPECT_EQ(page->messages[1].received, 0);
}

}  // namespace
}  // namespace mailroom::graph
