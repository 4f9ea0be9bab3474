// The imap::client methods of the operator commands (client_ops.cpp) against
// a scripted IMAP server: EXAMINE, pipelined UID FETCH of message summaries,
// UID STORE -FLAGS.
#include "imap/client.hpp"
#include "support/async_test.hpp"
#include "support/fake_imap_server.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace mailroom::imap {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using boost::system::error_code;
using test::fake_imap_server;
using test::imap_script;
using lines = std::vector<std::string>;

// Named objects only in co_await expressions (g++ 12 may destroy a temporary
// there twice).
const std::string kInbox = "INBOX";
const std::string kSeen = "\\Seen";
const std::string kHeaderSection = "BODY.PEEK[HEADER.FIELDS (SUBJECT)]";

imap_script logged_in() {
  imap_script s;
  s.line("* OK [CAPABILITY IMAP4rev1 UIDPLUS] fake ready")
      .expect(R"(^(\S+) LOGIN .*$)")
      .tagged("OK [CAPABILITY IMAP4rev1 UIDPLUS] Logged in");
  return s;
}

class ClientOpsTest : public ::testing::Test {
 protected:
  ClientOpsTest() {
    mb_.email = "incoming@example.com";
    mb_.password = secret("pw");
    mb_.name = "INBOX";
    mb_.host = "127.0.0.1";
    mb_.port = server_.port();
    mb_.ssl.enabled = false;
    mb_.allow_plaintext_login = true;
    opts_.connect_timeout = 5s;
    opts_.command_timeout = 2s;
    opts_.logout_timeout = 1s;
  }

  template <class F>
  void run(F body) {
    {
      client c(io_.get_executor(), mb_, opts_);
      const auto r = test::run_bounded(io_, body(c), 10s);
      EXPECT_TRUE(r.finished) << "the client did not finish";
      if (!r.finished) {
        c.close();
        io_.restart();
        io_.run_for(2s);
      }
      EXPECT_FALSE(r.failure);
    }
    EXPECT_TRUE(server_.wait_closed());
    EXPECT_EQ(server_.errors(), lines{});
  }

  asio::awaitable<error_code> login(client& c) {
    const std::function<void(const char*)> on_step = [](const char*) {};
    co_return co_await c.connect_and_login(on_step);
  }

  asio::io_context io_;
  fake_imap_server server_;
  config::mailbox mb_;
  client_options opts_;
};

TEST_F(ClientOpsTest, ExamineReadsUidvalidity) {
  server_.add(logged_in()
                  .expect(R"(^(A0002) EXAMINE INBOX$)")
                  .line("* 3 EXISTS")
                  .line("* OK [UIDVALIDITY 42] UIDs valid")
                  .tagged("OK [READ-ONLY] Examine completed"));
  error_code ec;
  std::uint32_t uidvalidity = 0;
  run([&](client& c) -> asio::awaitable<void> {
    ec = co_await login(c);
    if (!ec) ec = co_await c.examine(kInbox);
    uidvalidity = c.uidvalidity();
  });
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(uidvalidity, 42u);
}

TEST_F(ClientOpsTest, ExamineRefusedIsMailboxMissing) {
  server_.add(logged_in().expect(R"(^(A0002) EXAMINE INBOX$)").tagged("NO Mailbox doesn't exist"));
  error_code ec;
  std::string detail;
  run([&](client& c) -> asio::awaitable<void> {
    ec = co_await login(c);
    if (!ec) ec = co_await c.examine(kInbox);
    detail = c.last_error();
  });
  EXPECT_EQ(ec, client_errc::mailbox_missing);
  EXPECT_NE(detail.find("doesn't exist"), std::string::npos) << detail;
}

TEST_F(ClientOpsTest, SummariesArePipelinedAndDecoded) {
  // Two UID sets (max 21 characters each). The server answers only after
  // both command lines arrived: a client waiting for the first answer would
  // time out here.
  opts_.uid_set_max_chars = 21;
  const std::string items =
      R"(\(UID FLAGS INTERNALDATE RFC822\.SIZE BODY\.PEEK\[HEADER\.FIELDS \(SUBJECT\)\]\))";
  server_.add(logged_in()
                  .expect("^A0002 UID FETCH 1000000001,1000000003 " + items + "$")
                  .expect("^A0003 UID FETCH 1000000005 " + items + "$")
                  .line("* 1 FETCH (UID 1000000001 FLAGS () INTERNALDATE \"24-Nov-2026 10:00:00 "
                        "+0000\" RFC822.SIZE 100 BODY[HEADER.FIELDS (SUBJECT)] {12}\r\n"
                        "Subject: a\r\n)")
                  .line("* 9 FETCH (FLAGS (\\Seen))")  // another session's flag change
                  .line("* 2 FETCH (UID 1000000003 FLAGS (\\Flagged) RFC822.SIZE 200 "
                        "BODY[HEADER.FIELDS (SUBJECT)] {12}\r\nSubject: b\r\n)")
                  .line("A0002 OK Fetch completed")
                  .line("* 4 EXISTS")
                  // flag updates of other sessions carry a UID during UID
                  // commands (RFC 3501 §6.4.8) but not the size we asked for
                  .line("* 1 FETCH (UID 1000000001 FLAGS (\\Seen))")
                  .line("* 7 FETCH (UID 1000000009 FLAGS (\\Seen) RFC822.SIZE 5)")
                  .line("* 3 FETCH (UID 1000000005 RFC822.SIZE 0 BODY[HEADER.FIELDS (SUBJECT)] "
                        "NIL)")
                  .line("A0003 OK Fetch completed"));
  error_code ec;
  std::vector<message_summary> got;
  run([&](client& c) -> asio::awaitable<void> {
    ec = co_await login(c);
    const std::vector<std::uint32_t> uids{1000000005, 1000000001, 1000000003};
    const client::summary_handler keep = [&](message_summary&& s) { got.push_back(std::move(s)); };
    if (!ec) ec = co_await c.uid_fetch_summaries(uids, kHeaderSection, keep);
  });
  EXPECT_FALSE(ec) << ec.message();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].uid, 1000000001u);
  EXPECT_EQ(got[0].header, "Subject: a\r\n");
  EXPECT_EQ(got[0].internal_date, 1795514400);
  EXPECT_EQ(got[0].size, 100u);
  EXPECT_EQ(got[1].flags, (std::vector<std::string>{"\\Flagged"}));
  EXPECT_FALSE(got[1].internal_date);
  EXPECT_EQ(got[2].uid, 1000000005u);
  EXPECT_EQ(got[2].header, "");
}

TEST_F(ClientOpsTest, AtMostEightFetchesAreInFlight) {
  // Ten UID sets of two UIDs each: eight go out, then nothing until one is answered, so a
  // server that stops reading while its answers are unread cannot wedge us.
  opts_.uid_set_max_chars = 21;
  imap_script s = logged_in();
  for (int i = 0; i < 8; ++i) s.expect(R"(^A\d{4} UID FETCH [\d,]+ .*$)");
  s.silence(std::chrono::milliseconds(300)).line("A0002 OK Fetch completed");
  s.expect(R"(^A0010 UID FETCH [\d,]+ .*$)");
  s.line("A0003 OK Fetch completed").expect(R"(^A0011 UID FETCH [\d,]+ .*$)");
  for (int tag = 4; tag <= 11; ++tag) s.line(fmt::format("A{:04} OK Fetch completed", tag));
  server_.add(s);
  error_code ec;
  run([&](client& c) -> asio::awaitable<void> {
    ec = co_await login(c);
    std::vector<std::uint32_t> uids;
    for (std::uint32_t u = 1; u <= 20; ++u) uids.push_back(1000000000u + 2 * u);
    const client::summary_handler ignore = [](message_summary&&) {};
    if (!ec) ec = co_await c.uid_fetch_summaries(uids, kHeaderSection, ignore);
  });
  EXPECT_FALSE(ec) << ec.message();
}

TEST_F(ClientOpsTest, OneFailedFetchFailsTheCallAfterAllAnswers) {
  opts_.uid_set_max_chars = 21;
  server_.add(logged_in()
                  .expect(R"(^A0002 UID FETCH 1000000001,1000000003 .*$)")
                  .expect(R"(^A0003 UID FETCH 1000000005 .*$)")
                  .line("A0002 NO Some messages vanished")
                  .line("A0003 OK Fetch completed")
                  .expect(R"(^(A0004) UID STORE 1 -FLAGS\.SILENT \(\\Seen\)$)")
                  .tagged("OK Store completed"));
  error_code ec, after;
  std::string detail;
  run([&](client& c) -> asio::awaitable<void> {
    ec = co_await login(c);
    const std::vector<std::uint32_t> uids{1000000001, 1000000003, 1000000005};
    const client::summary_handler ignore = [](message_summary&&) {};
    if (!ec) ec = co_await c.uid_fetch_summaries(uids, kHeaderSection, ignore);
    detail = c.last_error();
    // The session is still usable: both tagged replies were consumed.
    const std::vector<std::uint32_t> one{1};
    after = co_await c.uid_store_remove_flags(one, kSeen);
  });
  EXPECT_EQ(ec, client_errc::command_failed);
  EXPECT_NE(detail.find("vanished"), std::string::npos) << detail;
  EXPECT_FALSE(after);
}

TEST_F(ClientOpsTest, RemoveFlagsIsSilentUidStore) {
  server_.add(logged_in()
                  .expect(R"(^(A0002) UID STORE 1:2,7 -FLAGS\.SILENT \(\\Seen\)$)")
                  .tagged("OK Store completed"));
  error_code ec;
  run([&](client& c) -> asio::awaitable<void> {
    ec = co_await login(c);
    const std::vector<std::uint32_t> uids{7, 2, 1};
    if (!ec) ec = co_await c.uid_store_remove_flags(uids, kSeen);
  });
  EXPECT_FALSE(ec) << ec.message();
}

}  // namespace
}  // namespace mailroom::imap
