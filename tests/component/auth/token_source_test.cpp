// auth::oauth2_token_source against a fake token endpoint: the request, the
// cache, one request for many callers, renewal after a rejection or expiry,
// a rotated refresh token, and errors without secrets.
#include "auth/token_source.hpp"

#include "auth/token_endpoint.hpp"
#include "component/delivery/fake_http_server.hpp"
#include "support/async_test.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <thread>

namespace mailroom::auth {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using test::fake_http_server;
using result = boost::system::result<imap::token_source::token>;

class TokenSourceTest : public ::testing::Test {
 protected:
  TokenSourceTest() {
    opts_.token_url = server_.url("/token");
    opts_.client_id = "client-1";
    opts_.client_secret = secret("client-secret-1");
    opts_.refresh_token = secret("refresh-1");
    opts_.scope = "https://mail.google.com/";
  }

  result get(oauth2_token_source& s) {
    result r = boost::system::error_code{};
    std::string detail;
    auto body = [&]() -> asio::awaitable<void> { r = co_await s.get(detail, nullptr); };
    const auto run = test::run_bounded(io_, body(), 10s);
    EXPECT_TRUE(run.finished);
    detail_ = detail;
    return r;
  }

  asio::io_context io_;
  fake_http_server server_{200, R"({"access_token":"at-1","expires_in":3600})"};
  std::shared_ptr<delivery::http_client> http_ = std::make_shared<delivery::http_client>(2);
  config::oauth2_options opts_;
  std::string detail_;
};

TEST_F(TokenSourceTest, AsksOnceAndKeepsTheToken) {
  auto source = std::make_shared<oauth2_token_source>(io_.get_executor(), opts_, http_);
  auto& s = *source;
  auto r = get(s);
  ASSERT_TRUE(r) << r.error().message() << ": " << detail_;
  EXPECT_EQ(r->value.reveal(), "at-1");
  EXPECT_EQ(r->generation, 1u);
  const auto req = server_.next_request();
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.target, "/token");
  EXPECT_EQ(req.header("Content-Type"), "application/x-www-form-urlencoded");
  EXPECT_EQ(req.body,
            "grant_type=refresh_token&refresh_token=refresh-1&client_id=client-1"
            "&client_secret=client-secret-1&scope=https%3A%2F%2Fmail.google.com%2F");
  r = get(s);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->generation, 1u);
  EXPECT_EQ(server_.received(), 1u) << "a valid token is not asked for again";
  EXPECT_EQ(s.renewals(), 1u);
}

TEST_F(TokenSourceTest, ManyCallersOneRequest) {
  auto source = std::make_shared<oauth2_token_source>(io_.get_executor(), opts_, http_);
  auto& s = *source;
  std::vector<result> got(5, boost::system::error_code{});
  std::string detail;
  auto all = [&]() -> asio::awaitable<void> {
    for (auto& g : got)
      asio::co_spawn(
          io_, [&]() -> asio::awaitable<void> { g = co_await s.get(detail, nullptr); },
          asio::detached);
    co_return;
  };
  test::run_bounded(io_, all(), 10s);
  for (const auto& g : got) {
    ASSERT_TRUE(g) << g.error().message() << ": " << detail;
    EXPECT_EQ(g->generation, 1u);
  }
  EXPECT_EQ(server_.received(), 1u);
}

TEST_F(TokenSourceTest, ARejectedTokenIsRenewedOnceAndARotatedRefreshTokenUsed) {
  auto source = std::make_shared<oauth2_token_source>(io_.get_executor(), opts_, http_);
  auto& s = *source;
  ASSERT_TRUE(get(s));
  server_.next_request();
  server_.set_response(200,
                       R"({"access_token":"at-2","expires_in":3600,"refresh_token":"refresh-2"})");
  s.reject(1);
  auto r = get(s);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->value.reveal(), "at-2");
  EXPECT_EQ(r->generation, 2u);
  EXPECT_NE(server_.next_request().body.find("refresh_token=refresh-1"), std::string::npos);
  // Another session reports the old token refused: a newer one exists.
  s.reject(1);
  EXPECT_EQ(get(s)->generation, 2u);
  EXPECT_EQ(server_.received(), 2u);
  // The endpoint rotated the refresh token: the next request uses the new one.
  server_.set_response(200, R"({"access_token":"at-3","expires_in":3600})");
  s.reject(2);
  EXPECT_EQ(get(s)->value.reveal(), "at-3");
  EXPECT_NE(server_.next_request().body.find("refresh_token=refresh-2"), std::string::npos);
}

TEST_F(TokenSourceTest, AnExpiringTokenIsRenewed) {
  // A 2 s token is renewed half-way: not before 1 s, a new one after. The
  // source's clock is the test's, moved by hand.
  server_.set_response(200, R"({"access_token":"short","expires_in":2})");
  auto now = std::chrono::steady_clock::now();
  auto source = std::make_shared<oauth2_token_source>(io_.get_executor(), opts_, http_,
                                                      [&now] { return now; });
  auto& s = *source;
  ASSERT_TRUE(get(s));
  now += 999ms;
  EXPECT_EQ(get(s)->value.reveal(), "short");
  EXPECT_EQ(server_.received(), 1u);
  now += 1ms;
  server_.set_response(200, R"({"access_token":"next","expires_in":3600})");
  auto r = get(s);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->value.reveal(), "next");
  EXPECT_EQ(server_.received(), 2u);
}

TEST_F(TokenSourceTest, ARefusedRefreshTokenIsPermanentAndNamedWithoutSecrets) {
  server_.set_response(
      400, R"({"error":"invalid_grant","error_description":"Token has been revoked."})");
  auto source = std::make_shared<oauth2_token_source>(io_.get_executor(), opts_, http_);
  auto& s = *source;
  auto r = get(s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), token_errc::refused);
  EXPECT_EQ(detail_, "token endpoint " + opts_.token_url +
                         ": HTTP 400: invalid_grant (Token has been revoked.); the refresh token "
                         "may have been revoked or expired");
  EXPECT_EQ(s.failures(), 1u);
}

// A caller can stop waiting (a session closed at shutdown) while the request
// runs on; aborting the HTTP client then ends the request too.
TEST_F(TokenSourceTest, AWaitCanBeCancelledWhileTheRequestHangs) {
  server_.set_response(0, "");  // never answers
  auto source = std::make_shared<oauth2_token_source>(io_.get_executor(), opts_, http_);
  auto handle = std::make_shared<imap::token_source::wait_handle>();
  result got = boost::system::error_code{};
  std::string detail;
  auto body = [&]() -> asio::awaitable<void> {
    asio::co_spawn(
        io_, [&]() -> asio::awaitable<void> { got = co_await source->get(detail, handle); },
        asio::detached);
    // Once the endpoint has the request, give up waiting for it.
    asio::steady_timer poll(io_);
    while (server_.received() == 0) {
      poll.expires_after(5ms);
      co_await poll.async_wait(asio::use_awaitable);
    }
    EXPECT_TRUE(handle->cancel) << "no wait to cancel";
    if (handle->cancel) handle->cancel();
    http_->abort_all();
  };
  const auto run = test::run_bounded(io_, body(), 10s);
  ASSERT_TRUE(run.finished);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error(), asio::error::operation_aborted);
  EXPECT_FALSE(handle->cancel) << "the handle is cleared once get() returned";
}

TEST_F(TokenSourceTest, AnEndpointThatCannotBeReachedIsRetriable) {
  opts_.token_url = "http://127.0.0.1:1/token";
  auto source = std::make_shared<oauth2_token_source>(io_.get_executor(), opts_, http_);
  auto& s = *source;
  auto r = get(s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), token_errc::unavailable);
  EXPECT_EQ(detail_.find("client-secret-1"), std::string::npos) << detail_;
  EXPECT_EQ(detail_.find("refresh-1"), std::string::npos) << detail_;
}

}  // namespace
}  // namespace mailroom::auth
