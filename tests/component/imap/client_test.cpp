// imap::client against a scripted IMAP server on 127.0.0.1: the exact command
// lines it writes, how it reads what the server answers, and how it fails.
#include "imap/client.hpp"

#include "auth/sasl.hpp"
#include "auth/token_endpoint.hpp"
#include "delivery/jwt.hpp"
#include "support/async_test.hpp"
#include "support/fake_imap_server.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <regex>
#include <string>
#include <vector>

namespace mailroom::imap {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using boost::system::error_code;
using test::async_flag;
using test::fake_imap_server;
using test::imap_script;
using lines = std::vector<std::string>;

constexpr const char* kPassword = "s3cret-pw";
const std::string kCaps = "IMAP4rev1 IDLE UIDPLUS";

// Arguments of co_await expressions are named objects, never temporaries
// (g++ 12 may destroy a temporary there twice).
const std::string kInbox = "INBOX";
const std::string kUnseen = "UNSEEN";
const std::string kSeenDeleted = "\\Seen \\Deleted";

void no_step(const char*) {}

// A greeting announcing `caps`, then LOGIN answered OK with the same list.
imap_script logged_in(const std::string& caps = kCaps) {
  imap_script s;
  s.line("* OK [CAPABILITY " + caps + "] fake ready")
      .expect(R"(^(\S+) LOGIN .*$)")
      .tagged("OK [CAPABILITY " + caps + "] Logged in");
  return s;
}

std::string login_line(const std::string& password = kPassword) {
  return std::string("A0001 LOGIN incoming@example.com ") + password;
}

class ClientTest : public ::testing::Test {
 protected:
  ClientTest() {
    mb_.email = "incoming@example.com";
    mb_.password = secret(kPassword);
    mb_.name = "INBOX";
    mb_.host = "127.0.0.1";
    mb_.port = server_.port();
    mb_.ssl.enabled = false;
    mb_.allow_plaintext_login = true;
    opts_.connect_timeout = 5s;
    opts_.command_timeout = 5s;
    opts_.logout_timeout = 1s;
  }

  // Runs `body(client)` on the io_context until it and everything it spawned
  // are done (at most `limit`), then destroys the client and waits for the
  // server to see the connection end.
  template <class F>
  void run(F body, std::chrono::milliseconds limit = 10s) {
    {
      client c(io_.get_executor(), mb_, opts_);
      const auto r = test::run_bounded(io_, body(c), limit);
      elapsed_ = r.elapsed;
      if (!r.finished) {
        ADD_FAILURE() << "the client did not finish within " << limit.count() << " ms";
        c.close();
        io_.restart();
        io_.run_for(2s);
      }
      if (r.failure) {
        try {
          std::rethrow_exception(r.failure);
        } catch (const std::exception& e) {
          ADD_FAILURE() << "exception: " << e.what();
        }
      }
    }
    EXPECT_TRUE(server_.wait_closed()) << "the server still holds a connection";
    EXPECT_EQ(server_.errors(), lines{});
  }

  // Named callbacks only: g++ 12 may destroy a temporary inside a co_await
  // expression twice.
  asio::awaitable<error_code> login(client& c) {
    const std::function<void(const char*)> on_step = no_step;
    co_return co_await c.connect_and_login(on_step);
  }

  // Declared before the server: its threads may post to the io_context until
  // the server is destroyed.
  asio::io_context io_;
  fake_imap_server server_;
  config::mailbox mb_;
  client_options opts_;
  std::chrono::milliseconds elapsed_{0};
};

// --- connect and login ----------------------------------------------------------

TEST_F(ClientTest, CapabilitiesInTheGreetingAreNotAskedAgain) {
  server_.add(logged_in("IMAP4rev1 IDLE"));
  error_code ec;
  std::vector<std::string> steps;
  bool has_idle = false;
  run([&](client& c) -> asio::awaitable<void> {
    const std::function<void(const char*)> on_step = [&](const char* s) { steps.emplace_back(s); };
    ec = co_await c.connect_and_login(on_step);
    has_idle = c.has_capability("idle");
  });
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(has_idle);
  EXPECT_EQ(steps, (lines{"Starting TLS session", "Logging into mailbox"}));
  EXPECT_EQ(server_.transcript(0), lines{login_line()});
}

TEST_F(ClientTest, CapabilitiesAreAskedWhenTheGreetingHasNone) {
  server_.add(imap_script()
                  .line("* OK fake ready")
                  .expect(R"(^(\S+) CAPABILITY$)")
                  .line("* CAPABILITY IMAP4rev1 AUTH=PLAIN")
                  .tagged("OK done")
                  .expect(R"(^(\S+) LOGIN .*$)")
                  .tagged("OK Logged in")  // no [CAPABILITY]: they may have changed
                  .expect(R"(^(\S+) CAPABILITY$)")
                  .line("* CAPABILITY IMAP4rev1 IDLE UIDPLUS")
                  .tagged("OK done"));
  error_code ec;
  bool idle_after = false;
  run([&](client& c) -> asio::awaitable<void> {
    ec = co_await login(c);
    idle_after = c.has_capability("IDLE");
  });
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(idle_after);
  EXPECT_EQ(server_.transcript(0),
            (lines{"A0001 CAPABILITY", "A0002 LOGIN incoming@example.com s3cret-pw",
                   "A0003 CAPABILITY"}));
}

TEST_F(ClientTest, PasswordWithSpaceQuoteAndBackslashIsQuoted) {
  mb_.password = secret(R"(pa ss"w\d)");
  server_.add(logged_in());
  error_code ec;
  run([&](client& c) -> asio::awaitable<void> { ec = co_await login(c); });
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(server_.transcript(0), lines{R"(A0001 LOGIN incoming@example.com "pa ss\"w\\d")"});
}

const std::string kUtf8Password = "p\xC3\xA4sswo\xCC\x88rt";  // 11 bytes

TEST_F(ClientTest, NonAsciiPasswordIsASynchronizingLiteral) {
  mb_.password = secret(kUtf8Password);
  server_.add(imap_script()
                  .line("* OK [CAPABILITY IMAP4rev1 IDLE] fake ready")
                  .expect(R"(^(\S+) LOGIN incoming@example\.com \{11\}$)")
                  // The literal's bytes must wait for the go-ahead.
                  .silence(300ms)
                  .line("+ go ahead")
                  .expect("^.*$")
                  .tagged("OK [CAPABILITY IMAP4rev1 IDLE] Logged in"));
  error_code ec;
  run([&](client& c) -> asio::awaitable<void> { ec = co_await login(c); });
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(server_.transcript(0), (lines{"A0001 LOGIN incoming@example.com {11}", kUtf8Password}));
}

TEST_F(ClientTest, NonAsciiPasswordWithLiteralPlusDoesNotWait) {
  mb_.password = secret(kUtf8Password);
  // Without a "+" from us, a client waiting for one would time out (1 s).
  opts_.command_timeout = 1s;
  server_.add(imap_script()
                  .line("* OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE] fake ready")
                  .expect(R"(^(\S+) LOGIN incoming@example\.com \{11\+\}$)")
                  .expect("^.*$")
                  .tagged("OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE] Logged in"));
  error_code ec;
  run([&](client& c) -> asio::awaitable<void> { ec = co_await login(c); });
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(server_.transcript(0),
            (lines{"A0001 LOGIN incoming@example.com {11+}", kUtf8Password}));
}

TEST_F(ClientTest, RejectedLoginIsPermanentAndItsErrorHoldsNoPassword) {
  server_.add(imap_script()
                  .line("* OK [CAPABILITY IMAP4rev1 IDLE] fake ready")
                  .expect(R"(^(\S+) LOGIN .*$)")
                  .tagged("NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)")
                  .expect_eof());
  error_code ec;
  std::string detail;
  run([&](client& c) -> asio::awaitable<void> {
    ec = co_await login(c);
    detail = c.last_error();
  });
  EXPECT_EQ(ec, client_errc::auth_failed) << ec.message();
  EXPECT_TRUE(is_permanent(ec));
  EXPECT_NE(detail.find("Invalid credentials (Failure)"), std::string::npos) << detail;
  EXPECT_NE(detail.find("AUTHENTICATIONFAILED"), std::string::npos) << detail;
  EXPECT_EQ(detail.find(kPassword), std::string::npos) << detail;
  EXPECT_EQ(ec.message().find(kPassword), std::string::npos);
  EXPECT_EQ(server_.transcript(0), lines{login_line()});
}

// A LOGIN refused for a passing reason is retriable: RFC 5530's codes for a
// temporary failure or a limit, and Gmail's session limit (an [ALERT]).
TEST_F(ClientTest, LoginRefusedForAPassingReasonIsRetriable) {
  const std::vector<std::string> answers{
      "NO [UNAVAILABLE] Temporary authentication failure. [host:2026-12-04 10:00:00]",
      "NO [LIMIT] Too many sessions",
      "NO [INUSE] Mailbox in use",
      "NO [SERVERBUG] Internal error",
      "NO [ALERT] Too many simultaneous connections. (Failure)",
  };
  for (const auto& answer : answers) {
    server_.add(imap_script()
                    .line("* OK [CAPABILITY IMAP4rev1 IDLE] fake ready")
                    .expect(R"(^(\S+) LOGIN .*$)")
                    .tagged(answer)
                    .expect_eof());
    error_code ec;
    std::string detail;
    run([&](client& c) -> asio::awaitable<void> {
      ec = co_await login(c);
      detail = c.last_error();
    });
    EXPECT_EQ(ec, client_errc::login_deferred) << answer << ": " << ec.message();
    EXPECT_FALSE(is_permanent(ec)) << answer;
    EXPECT_NE(detail.find(answer.substr(answer.find("] ") + 2)), std::string::npos) << detail;
  }
}

// A BYE says why the server ends the session; the close after it must not
// replace that text (an [ALERT] must reach the operator, RFC 3501 §7.1).
TEST_F(ClientTest, ByeBeforeTheCloseIsTheErrorText) {
  server_.add(imap_script()
                  .line("* OK [CAPABILITY IMAP4rev1 IDLE] fake ready")
                  .expect(R"(^(\S+) LOGIN .*$)")
                  .line("* BYE [ALERT] Too many simultaneous connections. (Failure)")
                  .close());
  error_code ec;
  std::string detail;
  run([&](client& c) -> asio::awaitable<void> {
    ec = co_await login(c);
    detail = c.last_error();
  });
  EXPECT_EQ(ec, client_errc::server_bye) << ec.message();
  EXPECT_FALSE(is_permanent(ec));
  EXPECT_EQ(detail, "server said BYE: [ALERT] Too many simultaneous connections. (Failure)");
}

// --- AUTHENTICATE XOAUTH2 / OAUTHBEARER ----------------------------------------

// Hands out "token-1", "token-2", ...; a rejected token is replaced.
class fake_tokens : public token_source {
 public:
  asio::awaitable<boost::system::result<token>> get(std::string& detail,
                                                    std::shared_ptr<wait_handle>) override {
    ++gets;
    if (fail) {
      detail = "token endpoint http://127.0.0.1:1/token: HTTP 400: invalid_grant";
      co_return fail;
    }
    co_return token{secret("token-" + std::to_string(generation)), generation};
  }
  void reject(std::uint64_t g) override {
    rejected.push_back(g);
    if (g == generation) ++generation;
  }
  std::uint64_t generation = 1;
  int gets = 0;
  std::vector<std::uint64_t> rejected;
  error_code fail;
};

std::string xoauth2_line(const std::string& tag, int n) {
  return tag + " AUTHENTICATE XOAUTH2 " +
         auth::xoauth2_initial_response("incoming@example.com", "token-" + std::to_string(n));
}

class ClientOauthTest : public ClientTest {
 protected:
  ClientOauthTest() {
    mb_.password = secret();
    mb_.auth = config::auth_method::xoauth2;
    mb_.oauth2.token_url = "http://127.0.0.1:1/token";
    opts_.tokens = tokens_;
  }
  error_code login_result() {
    error_code ec;
    run([&](client& c) -> asio::awaitable<void> {
      ec = co_await login(c);
      detail_ = c.last_error();
    });
    return ec;
  }
  std::shared_ptr<fake_tokens> tokens_ = std::make_shared<fake_tokens>();
  std::string detail_;
};

TEST_F(ClientOauthTest, Xoauth2WithSaslIr) {
  server_.add(imap_script()
                  .line("* OK [CAPABILITY IMAP4rev1 IDLE AUTH=XOAUTH2 SASL-IR] fake ready")
                  .expect(R"(^(\S+) AUTHENTICATE XOAUTH2 \S+$)")
                  .tagged("OK [CAPABILITY IMAP4rev1 IDLE] Logged in"));
  const error_code ec = login_result();
  EXPECT_FALSE(ec) << ec.message() << ": " << detail_;
  EXPECT_EQ(server_.transcript(0), lines{xoauth2_line("A0001", 1)});
  EXPECT_EQ(tokens_->gets, 1);
}

TEST_F(ClientOauthTest, OauthbearerWithoutSaslIrWaitsForTheContinuation) {
  mb_.auth = config::auth_method::oauthbearer;
  const std::string ir = auth::oauthbearer_initial_response("incoming@example.com", "127.0.0.1",
                                                            server_.port(), "token-1");
  server_.add(imap_script()
                  .line("* OK [CAPABILITY IMAP4rev1 IDLE AUTH=OAUTHBEARER] fake ready")
                  .expect(R"(^(\S+) AUTHENTICATE OAUTHBEARER$)")
                  .silence(50ms)  // the response waits for the "+"
                  .line("+ ")
                  .expect("^" + ir + "$")
                  .tagged("OK Logged in")
                  .expect(R"(^(\S+) CAPABILITY$)")
                  .line("* CAPABILITY IMAP4rev1 IDLE")
                  .tagged("OK Capability completed"));
  const error_code ec = login_result();
  EXPECT_FALSE(ec) << ec.message() << ": " << detail_;
  EXPECT_EQ(server_.transcript(0),
            (lines{"A0001 AUTHENTICATE OAUTHBEARER", ir, "A0002 CAPABILITY"}));
}

// A token the server refuses (expired, revoked) is replaced once; the
// error challenge is answered with an empty line (XOAUTH2).
TEST_F(ClientOauthTest, ARefusedTokenIsRenewedOnce) {
  const std::string challenge = delivery::base64_encode(R"({"status":"401","schemes":"bearer"})");
  server_.add(imap_script()
                  .line("* OK [CAPABILITY IMAP4rev1 IDLE AUTH=XOAUTH2 SASL-IR] fake ready")
                  .expect(R"(^(\S+) AUTHENTICATE XOAUTH2 \S+$)")
                  .line("+ " + challenge)
                  .expect("^$")
                  .tagged("NO [AUTHENTICATIONFAILED] Authentication failed.")
                  .expect(R"(^(\S+) AUTHENTICATE XOAUTH2 \S+$)")
                  .tagged("OK [CAPABILITY IMAP4rev1 IDLE] Logged in"));
  const error_code ec = login_result();
  EXPECT_FALSE(ec) << ec.message() << ": " << detail_;
  EXPECT_EQ(server_.transcript(0), (lines{xoauth2_line("A0001", 1), "", xoauth2_line("A0002", 2)}));
  EXPECT_EQ(tokens_->rejected, (std::vector<std::uint64_t>{1}));
}

TEST_F(ClientOauthTest, RefusedTwiceIsAPermanentRejectionWithoutTheToken) {
  const std::string challenge = delivery::base64_encode(R"({"status":"401"})");
  server_.add(imap_script()
                  .line("* OK [CAPABILITY IMAP4rev1 IDLE AUTH=XOAUTH2 SASL-IR] fake ready")
                  .expect(R"(^(\S+) AUTHENTICATE XOAUTH2 \S+$)")
                  .line("+ " + challenge)
                  .expect("^$")
                  .tagged("NO [AUTHENTICATIONFAILED] Authentication failed.")
                  .expect(R"(^(\S+) AUTHENTICATE XOAUTH2 \S+$)")
                  .line("+ " + challenge)
                  .expect("^$")
                  .tagged("NO [AUTHENTICATIONFAILED] Authentication failed.")
                  .expect_eof());
  const error_code ec = login_result();
  EXPECT_EQ(ec, client_errc::auth_failed) << ec.message();
  EXPECT_TRUE(is_permanent(ec));
  EXPECT_EQ(detail_,
            "AUTHENTICATE XOAUTH2 NO [AUTHENTICATIONFAILED]: Authentication failed. "
            "({\"status\":\"401\"}); refused again with a new token from "
            "http://127.0.0.1:1/token");
  EXPECT_EQ(detail_.find("token-"), std::string::npos);
  EXPECT_EQ(tokens_->rejected, (std::vector<std::uint64_t>{1, 2}));
}

TEST_F(ClientOauthTest, AServerWithoutTheMechanismIsAPermanentError) {
  mb_.auth = config::auth_method::oauthbearer;
  server_.add(
      imap_script().line("* OK [CAPABILITY IMAP4rev1 IDLE AUTH=XOAUTH2] fake ready").expect_eof());
  const error_code ec = login_result();
  EXPECT_EQ(ec, client_errc::mechanism_missing) << ec.message();
  EXPECT_TRUE(is_permanent(ec));
  EXPECT_EQ(tokens_->gets, 0);
}

TEST_F(ClientOauthTest, ATokenEndpointThatRefusesIsPermanentAndSendsNothing) {
  tokens_->fail = auth::token_errc::refused;
  server_.add(imap_script()
                  .line("* OK [CAPABILITY IMAP4rev1 IDLE AUTH=XOAUTH2 SASL-IR] fake ready")
                  .expect_eof());
  error_code ec = login_result();
  EXPECT_EQ(ec, auth::token_errc::refused) << ec.message();
  EXPECT_TRUE(is_permanent(ec));
  EXPECT_NE(detail_.find("invalid_grant"), std::string::npos) << detail_;
  EXPECT_EQ(server_.transcript(0), lines{});

  tokens_->fail = auth::token_errc::unavailable;
  server_.add(imap_script()
                  .line("* OK [CAPABILITY IMAP4rev1 IDLE AUTH=XOAUTH2 SASL-IR] fake ready")
                  .expect_eof());
  ec = login_result();
  EXPECT_EQ(ec, auth::token_errc::unavailable) << ec.message();
  EXPECT_FALSE(is_permanent(ec)) << "an endpoint that does not answer is retried";
}

TEST_F(ClientTest, PreauthGreetingNeedsNoLogin) {
  server_.add(imap_script().line("* PREAUTH [CAPABILITY IMAP4rev1 IDLE] logged in already"));
  error_code ec;
  run([&](client& c) -> asio::awaitable<void> { ec = co_await login(c); });
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(server_.transcript(0), lines{});
}

TEST_F(ClientTest, StartTlsNotAnnouncedIsRefusedBeforeAnyPassword) {
  mb_.start_tls = true;
  server_.add(imap_script().line("* OK [CAPABILITY IMAP4rev1 IDLE AUTH=PLAIN] fake ready"));
  error_code ec;
  run([&](client& c) -> asio::awaitable<void> { ec = co_await login(c); });
  EXPECT_EQ(ec, client_errc::starttls_refused) << ec.message();
  EXPECT_TRUE(is_permanent(ec));
  EXPECT_EQ(server_.transcript(0), lines{});
}

TEST_F(ClientTest, StartTlsMissingFromCapabilityResponseIsRefused) {
  mb_.start_tls = true;
  server_.add(imap_script()
                  .line("* OK fake ready")
                  .expect(R"(^(\S+) CAPABILITY$)")
                  .line("* CAPABILITY IMAP4rev1 IDLE")
                  .tagged("OK done"));
  error_code ec;
  run([&](client& c) -> asio::awaitable<void> { ec = co_await login(c); });
  EXPECT_EQ(ec, client_errc::starttls_refused) << ec.message();
  EXPECT_EQ(server_.transcript(0), lines{"A0001 CAPABILITY"});
}

TEST_F(ClientTest, StartTlsAnsweredNoIsRefused) {
  mb_.start_tls = true;
  server_.add(imap_script()
                  .line("* OK [CAPABILITY IMAP4rev1 STARTTLS IDLE] fake ready")
                  .expect(R"(^(\S+) STARTTLS$)")
                  .tagged("NO TLS is not available right now"));
  error_code ec;
  std::string detail;
  run([&](client& c) -> asio::awaitable<void> {
    ec = co_await login(c);
    detail = c.last_error();
  });
  EXPECT_EQ(ec, client_errc::starttls_refused) << ec.message();
  EXPECT_NE(detail.find("TLS is not available right now"), std::string::npos) << detail;
  EXPECT_EQ(server_.transcript(0), lines{"A0001 STARTTLS"});
}

TEST_F(ClientTest, PlaintextAfterTheStartTlsAnswerIsRejected) {
  // Bytes after "OK Begin TLS" and before the handshake would be taken as
  // coming from inside TLS (RFC 3501 §6.2.1, CVE-2011-0411).
  mb_.start_tls = true;
  server_.add(imap_script()
                  .line("* OK [CAPABILITY IMAP4rev1 STARTTLS IDLE] fake ready")
                  .expect(R"(^(\S+) STARTTLS$)")
                  .then([](test::imap_connection& c) {
                    return c.send(c.tag() + " OK Begin TLS negotiation now\r\n* 1 EXISTS\r\n");
                  }));
  error_code ec;
  run([&](client& c) -> asio::awaitable<void> { ec = co_await login(c); });
  EXPECT_EQ(ec, client_errc::server_bye) << ec.message();
  EXPECT_EQ(server_.transcript(0), lines{"A0001 STARTTLS"});
}

TEST_F(ClientTest, LoginDisabledRefusesPlaintextLogin) {
  server_.add(imap_script().line("* OK [CAPABILITY IMAP4rev1 LOGINDISABLED IDLE] fake ready"));
  error_code ec;
  run([&](client& c) -> asio::awaitable<void> { ec = co_await login(c); });
  EXPECT_EQ(ec, client_errc::plaintext_refused) << ec.message();
  EXPECT_TRUE(is_permanent(ec));
  EXPECT_EQ(server_.transcript(0), lines{});
}

TEST_F(ClientTest, ByeGreetingIsServerBye) {
  server_.add(imap_script().line("* BYE Too many connections from your IP").close());
  error_code ec;
  std::string detail;
  run([&](client& c) -> asio::awaitable<void> {
    ec = co_await login(c);
    detail = c.last_error();
  });
  EXPECT_EQ(ec, client_errc::server_bye) << ec.message();
  EXPECT_FALSE(is_permanent(ec));
  EXPECT_NE(detail.find("Too many connections"), std::string::npos) << detail;
  EXPECT_EQ(server_.transcript(0), lines{});
}

// --- SELECT, UID SEARCH -------------------------------------------------------

TEST_F(ClientTest, SelectReadsUidValidity) {
  server_.add(logged_in()
                  .expect(R"(^(\S+) SELECT INBOX$)")
                  .line(R"(* FLAGS (\Answered \Flagged \Deleted \Seen \Draft))")
                  .line("* 3 EXISTS")
                  .line("* 0 RECENT")
                  .line("* OK [UIDVALIDITY 3857529045] UIDs valid")
                  .line("* OK [UIDNEXT 4] Predicted next UID")
                  .tagged("OK [READ-WRITE] Select completed"));
  error_code ec;
  std::uint32_t uidvalidity = 0;
  bool hint = true;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    ec = co_await c.select(kInbox);
    uidvalidity = c.uidvalidity();
    hint = c.take_new_mail_hint();
  });
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(uidvalidity, 3857529045u);
  EXPECT_FALSE(hint) << "the EXISTS of SELECT is not new mail";
  EXPECT_EQ(server_.transcript(0), (lines{login_line(), "A0002 SELECT INBOX"}));
}

TEST_F(ClientTest, SelectAnsweredNoIsMailboxMissing) {
  server_.add(logged_in()
                  .expect(R"(^(\S+) SELECT "Service Desk"$)")
                  .tagged("NO [NONEXISTENT] Mailbox doesn't exist: Service Desk"));
  error_code ec;
  std::string detail;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    const std::string folder = "Service Desk";
    ec = co_await c.select(folder);
    detail = c.last_error();
  });
  EXPECT_EQ(ec, client_errc::mailbox_missing) << ec.message();
  EXPECT_TRUE(is_permanent(ec));
  EXPECT_NE(detail.find("Mailbox doesn't exist"), std::string::npos) << detail;
}

TEST_F(ClientTest, UidSearchReturnsTheUids) {
  server_.add(logged_in()
                  .expect(R"(^(\S+) UID SEARCH UNSEEN$)")
                  .line("* SEARCH 3 7 12")
                  .line("* 13 EXISTS")
                  .tagged("OK Search completed")
                  .expect(R"(^(\S+) UID SEARCH UNSEEN$)")
                  .line("* SEARCH")
                  .tagged("OK Search completed")
                  .expect(R"(^(\S+) UID SEARCH UNSEEN$)")
                  .tagged("NO [SERVERBUG] search failed"));
  std::vector<std::uint32_t> first, second;
  bool hint1 = false, hint2 = true;
  error_code third;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    auto r1 = co_await c.uid_search(kUnseen);
    if (r1) first = *r1;
    hint1 = c.take_new_mail_hint();
    hint2 = c.take_new_mail_hint();
    auto r2 = co_await c.uid_search(kUnseen);
    if (r2) second = *r2;
    auto r3 = co_await c.uid_search(kUnseen);
    third = r3 ? error_code{} : r3.error();
  });
  EXPECT_EQ(first, (std::vector<std::uint32_t>{3, 7, 12}));
  EXPECT_TRUE(hint1) << "an EXISTS during a command announces new mail";
  EXPECT_FALSE(hint2);
  EXPECT_EQ(second, std::vector<std::uint32_t>{});
  EXPECT_EQ(third, client_errc::command_failed);
  EXPECT_EQ(server_.transcript(0), (lines{login_line(), "A0002 UID SEARCH UNSEEN",
                                          "A0003 UID SEARCH UNSEEN", "A0004 UID SEARCH UNSEEN"}));
}

// --- UID FETCH ------------------------------------------------------------------

// Bodies that look like protocol: CRLFs, parentheses, a literal announcement
// and the tagged line that would end the command; 8-bit bytes and a NUL.
const std::string kBody1 =
    "From: alice@example.org\r\n"
    "Subject: parens ) and (\r\n"
    "\r\n"
    "hello)\r\n"
    "A0002 OK UID FETCH completed\r\n"
    "* 2 FETCH (UID 2 BODY[] {3}\r\n";
constexpr char kBody2Bytes[] = "Subject: caf\xE9\r\n\r\n\x00\xFF\x01 bytes\r\n";
const std::string kBody2(kBody2Bytes, sizeof kBody2Bytes - 1);
const std::string kBody3 = "no final newline )";

TEST_F(ClientTest, UidFetchDeliversEachBodyByteExact) {
  ASSERT_EQ(kBody2.size(), 28u);
  const std::string response =
      "* 1 FETCH (UID 1 BODY[] " + imap_script::literal(kBody1) + ")\r\n" +
      "* 2 FETCH (UID 2 FLAGS (\\Seen))\r\n" +  // another session's flag change
      "* 2 FETCH (UID 2 BODY[] " + imap_script::literal(kBody2) + " FLAGS ())\r\n" +
      "* 9 FETCH (FLAGS (\\Deleted))\r\n" +  // no UID, no body
      "* 3 FETCH (BODY[] " + imap_script::literal(kBody3) + " UID 3)\r\n";
  server_.add(logged_in()
                  .expect(R"(^(\S+) UID FETCH 1:3 \(UID BODY\.PEEK\[\]\)$)")
                  .send_in_pieces(response, 7)
                  .tagged("OK Fetch completed"));
  error_code ec;
  std::vector<std::pair<std::uint32_t, std::string>> bodies;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    const std::vector<std::uint32_t> uids{3, 1, 2};
    const body_handler collect = [&](std::uint32_t uid, std::string&& body) {
      bodies.emplace_back(uid, std::move(body));
    };
    ec = co_await c.uid_fetch_bodies(uids, collect);
  });
  EXPECT_FALSE(ec) << ec.message();
  ASSERT_EQ(bodies.size(), 3u);
  EXPECT_EQ(bodies[0].first, 1u);
  EXPECT_EQ(bodies[0].second, kBody1);
  EXPECT_EQ(bodies[1].first, 2u);
  EXPECT_EQ(bodies[1].second, kBody2);
  EXPECT_EQ(bodies[2].first, 3u);
  EXPECT_EQ(bodies[2].second, kBody3);
  const auto t = server_.transcript(0);
  EXPECT_EQ(t, (lines{login_line(), "A0002 UID FETCH 1:3 (UID BODY.PEEK[])"}));
  for (const auto& l : t) EXPECT_EQ(l.find("RFC822"), std::string::npos) << l;
}

TEST_F(ClientTest, ConnectionClosedInTheMiddleOfABodyIsServerBye) {
  server_.add(logged_in()
                  .expect(R"(^(\S+) UID FETCH 5 \(UID BODY\.PEEK\[\]\)$)")
                  .send("* 1 FETCH (UID 5 BODY[] {100}\r\nFrom: alice@example.org\r\nSubj")
                  .close());
  error_code ec;
  int calls = 0;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    const std::vector<std::uint32_t> uids{5};
    const body_handler count = [&](std::uint32_t, std::string&&) { ++calls; };
    ec = co_await c.uid_fetch_bodies(uids, count);
  });
  EXPECT_EQ(ec, client_errc::server_bye) << ec.message();
  EXPECT_EQ(calls, 0);
}

// --- UID STORE, EXPUNGE --------------------------------------------------------------

TEST_F(ClientTest, UidStoreAddsFlagsSilently) {
  server_.add(logged_in()
                  .expect(R"(^(\S+) UID STORE 1:3,7 \+FLAGS\.SILENT \(\\Seen \\Deleted\)$)")
                  .tagged("OK Store completed"));
  error_code ec;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    const std::vector<std::uint32_t> uids{7, 2, 1, 3};
    ec = co_await c.uid_store_add_flags(uids, kSeenDeleted);
  });
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(server_.transcript(0),
            (lines{login_line(), R"(A0002 UID STORE 1:3,7 +FLAGS.SILENT (\Seen \Deleted))"}));
}

// Parses "1:3,7" into {1, 2, 3, 7}.
std::vector<std::uint32_t> parse_uid_set(const std::string& set) {
  std::vector<std::uint32_t> out;
  std::size_t at = 0;
  while (at < set.size()) {
    std::size_t end = set.find(',', at);
    if (end == std::string::npos) end = set.size();
    const std::string piece = set.substr(at, end - at);
    const std::size_t colon = piece.find(':');
    const auto lo = static_cast<std::uint32_t>(std::stoul(piece.substr(0, colon)));
    const auto hi = colon == std::string::npos
                        ? lo
                        : static_cast<std::uint32_t>(std::stoul(piece.substr(colon + 1)));
    for (std::uint32_t u = lo; u <= hi; ++u) out.push_back(u);
    at = end + 1;
  }
  return out;
}

TEST_F(ClientTest, LongUidSetsAreSplitIntoShortCommands) {
  std::vector<std::uint32_t> uids;
  for (std::uint32_t u = 1; uids.size() < 2000; u += 2) uids.push_back(u);  // no ranges
  server_.add(logged_in().serve([](test::imap_connection& c, const std::string& line) {
    return c.send(line.substr(0, line.find(' ')) + " OK Store completed\r\n");
  }));
  error_code ec;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    ec = co_await c.uid_store_add_flags(uids, kSeenDeleted);
  });
  EXPECT_FALSE(ec) << ec.message();
  const auto t = server_.transcript(0);
  ASSERT_GE(t.size(), 3u) << "2,000 UIDs need several commands";
  const std::regex store(R"(^A\d{4} UID STORE ([0-9:,]+) \+FLAGS\.SILENT \(\\Seen \\Deleted\)$)");
  std::vector<std::uint32_t> sent;
  for (std::size_t i = 1; i < t.size(); ++i) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(t[i], m, store)) << t[i];
    EXPECT_LE(m[1].length(), 1000) << "UID set too long in command " << i;
    const auto part = parse_uid_set(m[1].str());
    sent.insert(sent.end(), part.begin(), part.end());
  }
  EXPECT_EQ(sent, uids) << "every UID exactly once, in order";
}

TEST_F(ClientTest, ExpungeUsesUidExpungeWithUidplus) {
  server_.add(logged_in("IMAP4rev1 IDLE UIDPLUS")
                  .expect(R"(^(\S+) UID EXPUNGE 4:5,9$)")
                  .line("* 2 EXPUNGE")
                  .tagged("OK Expunge completed"));
  error_code ec;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    const std::vector<std::uint32_t> uids{9, 4, 5};
    ec = co_await c.expunge(uids);
  });
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(server_.transcript(0), (lines{login_line(), "A0002 UID EXPUNGE 4:5,9"}));
}

TEST_F(ClientTest, ExpungeWithoutUidplusIsPlainExpunge) {
  server_.add(
      logged_in("IMAP4rev1 IDLE").expect(R"(^(\S+) EXPUNGE$)").tagged("OK Expunge completed"));
  error_code ec;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    const std::vector<std::uint32_t> uids{9, 4, 5};
    ec = co_await c.expunge(uids);
  });
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(server_.transcript(0), (lines{login_line(), "A0002 EXPUNGE"}));
}

// --- IDLE ---------------------------------------------------------------------

// An idle session holds a small read buffer; a large FETCH grows it (fewer
// reads for a big literal) and the next IDLE gives the memory back.
TEST_F(ClientTest, ReadBufferGrowsForALargeFetchAndShrinksBeforeIdle) {
  const std::string big(1024 * 1024, 'b');
  server_.add(logged_in()
                  .expect(R"(^(\S+) UID FETCH 1 \(UID BODY\.PEEK\[\]\)$)")
                  .send("* 1 FETCH (UID 1 BODY[] " + imap_script::literal(big) + ")\r\n")
                  .tagged("OK Fetch completed")
                  .expect(R"(^(\S+) IDLE$)")
                  .line("+ idling")
                  .line("* 2 EXISTS")
                  .expect("^DONE$")
                  .tagged("OK IDLE terminated"));
  std::size_t at_start = 0, after_fetch = 0, after_idle = 0, got = 0;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    at_start = c.read_buffer_size();
    const std::vector<std::uint32_t> uids{1};
    const body_handler collect = [&](std::uint32_t, std::string&& body) { got = body.size(); };
    if (auto e = co_await c.uid_fetch_bodies(uids, collect)) ADD_FAILURE() << e.message();
    after_fetch = c.read_buffer_size();
    auto r = co_await c.idle(30s);
    if (!r) ADD_FAILURE() << r.error().message();
    after_idle = c.read_buffer_size();
  });
  EXPECT_EQ(got, big.size());
  EXPECT_EQ(at_start, 4096u);
  EXPECT_GT(after_fetch, 4096u);
  EXPECT_LE(after_fetch, 256u * 1024);
  EXPECT_EQ(after_idle, 4096u);
}

// New mail makes the message count grow (RFC 3501 §7.3.1); an EXISTS that
// repeats the count (Courier sends "* 0 EXISTS" after an EXPUNGE) is none.
TEST_F(ClientTest, OnlyAGrowingExistsCountIsNewMail) {
  server_.add(logged_in()
                  .expect(R"(^(\S+) SELECT INBOX$)")
                  .line("* 3 EXISTS")
                  .line("* OK [UIDVALIDITY 7] UIDs valid")
                  .tagged("OK [READ-WRITE] Select completed")
                  .expect(R"(^(\S+) UID EXPUNGE 3$)")
                  .line("* 3 EXPUNGE")
                  .line("* 2 EXISTS")
                  .tagged("OK Expunge completed")
                  .expect(R"(^(\S+) UID SEARCH UNSEEN$)")
                  .line("* 3 EXISTS")
                  .line("* SEARCH 4")
                  .tagged("OK Search completed")
                  .expect(R"(^(\S+) IDLE$)")
                  .line("+ idling")
                  .line("* 3 EXISTS")  // the same count: IDLE goes on
                  .line("* 4 EXISTS")  // one more: new mail
                  .expect("^DONE$")
                  .tagged("OK IDLE terminated"));
  bool after_select = true, after_expunge = true, after_search = false;
  boost::system::result<idle_end> r = idle_end::timeout;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    const std::string inbox = "INBOX";
    if (auto e = co_await c.select(inbox)) ADD_FAILURE() << e.message();
    after_select = c.take_new_mail_hint();
    const std::vector<std::uint32_t> uids{3};
    if (auto e = co_await c.expunge(uids)) ADD_FAILURE() << e.message();
    after_expunge = c.take_new_mail_hint();
    auto found = co_await c.uid_search(kUnseen);
    if (!found) ADD_FAILURE() << found.error().message();
    after_search = c.take_new_mail_hint();
    r = co_await c.idle(30s);
  });
  EXPECT_FALSE(after_select) << "the count announced by SELECT is not new mail";
  EXPECT_FALSE(after_expunge) << "an unchanged count after EXPUNGE is not new mail";
  EXPECT_TRUE(after_search);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, idle_end::new_mail);
}

TEST_F(ClientTest, IdleEndsWithNewMailWhenExistsArrives) {
  server_.add(logged_in()
                  .expect(R"(^(\S+) IDLE$)")
                  .line("+ idling")
                  .line("* 5 EXISTS")
                  .expect("^DONE$")
                  .tagged("OK IDLE terminated"));
  boost::system::result<idle_end> r = idle_end::timeout;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    r = co_await c.idle(30s);
  });
  ASSERT_TRUE(r) << r.error().message();
  // Not the 30 s timeout, which would outlast the run.
  EXPECT_EQ(*r, idle_end::new_mail);
  EXPECT_EQ(server_.transcript(0), (lines{login_line(), "A0002 IDLE", "DONE"}));
}

TEST_F(ClientTest, IdleTimesOutWithDone) {
  server_.add(logged_in()
                  .expect(R"(^(\S+) IDLE$)")
                  .line("+ idling")
                  .expect("^DONE$")
                  .tagged("OK IDLE terminated"));
  boost::system::result<idle_end> r = idle_end::new_mail;
  auto idle_took = 0ms;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    const auto start = std::chrono::steady_clock::now();
    r = co_await c.idle(1s);
    idle_took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
  });
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, idle_end::timeout);
  EXPECT_GE(idle_took, 1s);  // a timer never fires early
  EXPECT_EQ(server_.transcript(0), (lines{login_line(), "A0002 IDLE", "DONE"}));
}

TEST_F(ClientTest, IdleTimeoutHoldsDoneUntilTheContinuation) {
  // The timeout passes before the server's "+": DONE must wait for it
  // (RFC 2177: DONE before "+" would be read as a command). The server sends
  // "+" once a 1 s timer of the test's, armed after the client's own 1 s
  // timer (the IDLE had to arrive first), has fired: the client's has too.
  auto later = std::make_shared<asio::steady_timer>(io_);
  auto fired = std::make_shared<std::atomic<bool>>(false);
  server_.add(logged_in()
                  .expect(R"(^(\S+) IDLE$)")
                  .call([this, later, fired] {
                    asio::post(io_, [this, later, fired] {
                      later->expires_after(1s);
                      // One more turn of the loop: a DONE the client's timer
                      // wrongly sent is on the wire by then.
                      later->async_wait([this, fired](error_code) {
                        asio::post(io_, [fired] { *fired = true; });
                      });
                    });
                  })
                  .wait_for([fired] { return fired->load(); }, "the client's IDLE timeout")
                  .silence(50ms)
                  .line("+ idling")
                  .expect("^DONE$")
                  .tagged("OK IDLE terminated"));
  boost::system::result<idle_end> r = idle_end::new_mail;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    r = co_await c.idle(1s);
  });
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, idle_end::timeout);
  EXPECT_EQ(server_.transcript(0), (lines{login_line(), "A0002 IDLE", "DONE"}));
}

TEST_F(ClientTest, InterruptIdleFromAnotherCoroutine) {  // the 30 s timeout outlasts the run
  async_flag idling(io_.get_executor());
  server_.add(logged_in()
                  .expect(R"(^(\S+) IDLE$)")
                  .line("+ idling")
                  .call([idling]() mutable { idling.set(); })
                  .expect("^DONE$")
                  .tagged("OK IDLE terminated"));
  boost::system::result<idle_end> r = idle_end::timeout;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    asio::co_spawn(
        io_,
        [&]() -> asio::awaitable<void> {
          co_await idling.wait();
          c.interrupt_idle();
        },
        asio::detached);
    r = co_await c.idle(30s);
  });
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, idle_end::interrupted);
  EXPECT_EQ(server_.transcript(0), (lines{login_line(), "A0002 IDLE", "DONE"}));
}

TEST_F(ClientTest, InterruptBeforeTheContinuationHoldsDone) {
  async_flag idle_received(io_.get_executor());
  auto interrupted = std::make_shared<std::atomic<bool>>(false);
  // "+" comes only after interrupt_idle() was called: the DONE it asked for
  // must wait for it.
  server_.add(logged_in()
                  .expect(R"(^(\S+) IDLE$)")
                  .call([idle_received]() mutable { idle_received.set(); })
                  .wait_for([interrupted] { return interrupted->load(); }, "interrupt_idle()")
                  .silence(50ms)
                  .line("+ idling")
                  .expect("^DONE$")
                  .tagged("OK IDLE terminated"));
  boost::system::result<idle_end> r = idle_end::timeout;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    asio::co_spawn(
        io_,
        [&]() -> asio::awaitable<void> {
          co_await idle_received.wait();
          c.interrupt_idle();
          // One more turn of the loop: a DONE wrongly sent is on the wire by then.
          co_await asio::post(io_, asio::use_awaitable);
          *interrupted = true;
        },
        asio::detached);
    r = co_await c.idle(30s);
  });
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, idle_end::interrupted);
  EXPECT_EQ(server_.transcript(0), (lines{login_line(), "A0002 IDLE", "DONE"}));
}

TEST_F(ClientTest, InterruptEndsThePollWaitWithoutIdleCapability) {
  async_flag waiting(io_.get_executor());
  // No IDLE: idle() waits without a command; the server sees nothing.
  server_.add(logged_in("IMAP4rev1 UIDPLUS"));
  boost::system::result<idle_end> r = idle_end::timeout;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    asio::co_spawn(
        io_,
        [&]() -> asio::awaitable<void> {
          co_await waiting.wait();
          c.interrupt_idle();
        },
        asio::detached);
    // The interrupt is posted now and runs once idle() waits (it does not
    // suspend before its wait begins); a wait of an hour outlasts the run.
    waiting.set();
    r = co_await c.idle(std::chrono::hours(1));
  });
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, idle_end::interrupted);
  EXPECT_EQ(server_.transcript(0), lines{login_line()});
}

TEST_F(ClientTest, ConnectionClosedDuringIdleIsServerBye) {
  server_.add(logged_in().expect(R"(^(\S+) IDLE$)").line("+ idling").close());
  boost::system::result<idle_end> r = idle_end::timeout;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    r = co_await c.idle(30s);
  });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), client_errc::server_bye) << r.error().message();
}

TEST_F(ClientTest, SilentServerHitsTheCommandTimeout) {
  opts_.command_timeout = 1s;
  server_.add(logged_in().expect(R"(^(\S+) UID SEARCH UNSEEN$)"));  // then never answers
  error_code ec;
  auto took = 0ms;
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    const auto start = std::chrono::steady_clock::now();
    auto r = co_await c.uid_search(kUnseen);
    took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start);
    ec = r ? error_code{} : r.error();
  });
  EXPECT_EQ(ec, net::errc::timed_out) << ec.message();
  EXPECT_FALSE(is_permanent(ec));
  EXPECT_GE(took, 1s);  // a timer never fires early
}

TEST_F(ClientTest, LogoutSendsLogoutAndCloses) {
  server_.add(logged_in()
                  .expect(R"(^(\S+) LOGOUT$)")
                  .line("* BYE Logging out")
                  .tagged("OK Logout completed")
                  .expect_eof());
  run([&](client& c) -> asio::awaitable<void> {
    if (auto e = co_await login(c)) ADD_FAILURE() << e.message();
    co_await c.logout();
  });
  EXPECT_EQ(server_.transcript(0), (lines{login_line(), "A0002 LOGOUT"}));
}

}  // namespace
}  // namespace mailroom::imap
