// `mailroom status` against a scripted IMAP server: a failure to read the
// oldest unseen message is reported (and fails the command) instead of
// showing as "no unseen message".
#include "ops/ops.hpp"
#include "support/fake_imap_server.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <sstream>
#include <string>

namespace mailroom::ops {
namespace {

using test::fake_imap_server;
using test::imap_script;

config::config one_mailbox(std::uint16_t port) {
  config::mailbox mb;
  mb.email = "incoming@example.com";
  mb.password = secret("pw");
  mb.name = "INBOX";
  mb.host = "127.0.0.1";
  mb.port = port;
  mb.ssl.enabled = false;
  mb.allow_plaintext_login = true;
  mb.delivery = config::delivery_method::logger;  // no Redis to ask
  config::config cfg;
  cfg.path = "test.yml";
  cfg.mailboxes.push_back(mb);
  return cfg;
}

// Greeting, LOGIN, EXAMINE, then SEARCH ALL / UNSEEN / DELETED.
imap_script examined_with_unseen() {
  imap_script s;
  s.line("* OK [CAPABILITY IMAP4rev1 UIDPLUS] ready")
      .expect(R"(^(\S+) LOGIN .*$)")
      .tagged("OK [CAPABILITY IMAP4rev1 UIDPLUS] Logged in")
      .expect(R"(^(\S+) EXAMINE .*$)")
      .line("* OK [UIDVALIDITY 7] UIDs valid")
      .tagged("OK [READ-ONLY] Examine completed")
      .expect(R"(^(\S+) UID SEARCH ALL$)")
      .line("* SEARCH 4 5 6")
      .tagged("OK Search completed")
      .expect(R"(^(\S+) UID SEARCH UNSEEN$)")
      .line("* SEARCH 5 6")
      .tagged("OK Search completed")
      .expect(R"(^(\S+) UID SEARCH DELETED$)")
      .line("* SEARCH")
      .tagged("OK Search completed");
  return s;
}

// `status` (as JSON or text) against a server that refuses the FETCH of the
// oldest unseen message (UID 5); returns the exit code and the output.
int status_with_failing_fetch(bool json, std::string& output) {
  fake_imap_server server;
  server.add(examined_with_unseen()
                 .expect(R"(^(\S+) UID FETCH 5 .*$)")
                 .tagged("NO [SERVERBUG] Internal error occurred")
                 .close());
  std::ostringstream out, err;
  invocation inv;
  inv.json = json;
  inv.out = &out;
  inv.err = &err;
  const int rc = run_status(one_mailbox(server.port()), inv);
  output = out.str() + err.str();
  return rc;
}

TEST(OpsStatus, OldestUnseenFetchFailureIsReportedNotHidden) {
  std::string out;
  EXPECT_EQ(status_with_failing_fetch(true, out), 1) << out;
  const auto j = nlohmann::json::parse(out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["unseen"], 2);
  ASSERT_TRUE(j[0]["oldest_unseen"].is_object()) << j[0].dump();
  EXPECT_NE(j[0]["oldest_unseen"]["error"].get<std::string>().find("Internal error"),
            std::string::npos)
      << j[0].dump();
}

TEST(OpsStatus, OldestUnseenFetchFailureIsNamedInTheText) {
  std::string out;
  EXPECT_EQ(status_with_failing_fetch(false, out), 1);
  EXPECT_NE(out.find("oldest unseen: ERROR: "), std::string::npos) << out;
}

}  // namespace
}  // namespace mailroom::ops
