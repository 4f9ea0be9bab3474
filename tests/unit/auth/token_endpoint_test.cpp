// The token request and the reading of every kind of answer (RFC 6749 §5).
#include "auth/token_endpoint.hpp"

#include <gtest/gtest.h>

namespace mailroom::auth {
namespace {

using namespace std::chrono_literals;

config::oauth2_options google() {
  config::oauth2_options o;
  o.provider = "google";
  o.token_url = "https://oauth2.googleapis.com/token";
  o.client_id = "123.apps.googleusercontent.com";
  o.client_secret = secret("s3cr&t=+");
  o.refresh_token = secret("1//0g-refresh");
  o.scope = "https://mail.google.com/";
  return o;
}

TEST(TokenRequest, RefreshTokenGrant) {
  const auto o = google();
  EXPECT_EQ(token_request_body(o, o.refresh_token.reveal()),
            "grant_type=refresh_token&refresh_token=1%2F%2F0g-refresh"
            "&client_id=123.apps.googleusercontent.com&client_secret=s3cr%26t%3D%2B"
            "&scope=https%3A%2F%2Fmail.google.com%2F");
}

TEST(TokenRequest, ClientCredentialsWithoutScope) {
  config::oauth2_options o;
  o.client_id = "app";
  o.client_secret = secret("x y");
  EXPECT_EQ(token_request_body(o, ""),
            "grant_type=client_credentials&client_id=app&client_secret=x%20y");
}

TEST(TokenResponse, AGrant) {
  std::string detail;
  auto g = parse_token_response(
      200, R"({"access_token":"ya29.a0","expires_in":3599,"scope":"x","token_type":"Bearer"})",
      detail);
  ASSERT_TRUE(g) << detail;
  EXPECT_EQ(g->access_token, "ya29.a0");
  EXPECT_EQ(g->expires_in, 3599s);
  EXPECT_EQ(g->refresh_token, "");
  // Microsoft rotates the refresh token; some endpoints send expires_in as a string.
  g = parse_token_response(200, R"({"access_token":"t","expires_in":"60","refresh_token":"r2"})",
                           detail);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->expires_in, 60s);
  EXPECT_EQ(g->refresh_token, "r2");
  g = parse_token_response(200, R"({"access_token":"t"})", detail);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->expires_in, 3600s) << "RFC 6749 §5.1 leaves expires_in optional";
}

TEST(TokenResponse, RefusalsArePermanent) {
  std::string detail;
  auto g = parse_token_response(
      400, R"({"error":"invalid_grant","error_description":"Token has been expired or revoked."})",
      detail);
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error(), token_errc::refused);
  EXPECT_EQ(detail, "HTTP 400: invalid_grant (Token has been expired or revoked.)");
  g = parse_token_response(401, R"({"error":"invalid_client"})", detail);
  EXPECT_EQ(g.error(), token_errc::refused);
}

TEST(TokenResponse, EverythingElseIsRetriable) {
  std::string detail;
  auto g = parse_token_response(503, "<html>Service Unavailable</html>", detail);
  EXPECT_EQ(g.error(), token_errc::unavailable);
  EXPECT_EQ(detail, "HTTP 503: <html>Service Unavailable</html>");
  g = parse_token_response(429, R"({"error":"slow_down"})", detail);
  EXPECT_EQ(g.error(), token_errc::unavailable);
  g = parse_token_response(400, R"({"error":"temporarily_unavailable"})", detail);
  EXPECT_EQ(g.error(), token_errc::unavailable);
  g = parse_token_response(200, R"({"token_type":"Bearer"})", detail);
  EXPECT_EQ(g.error(), token_errc::unavailable);
  EXPECT_EQ(detail, "HTTP 200 without an access_token");
  g = parse_token_response(200, "not json", detail);
  EXPECT_EQ(g.error(), token_errc::unavailable);
}

TEST(TokenRenewal, ATenthOfTheLifeAtLeastAMinuteAtMostHalf) {
  EXPECT_EQ(renew_after(3600s), 3240s);  // 6 min before an hour runs out
  EXPECT_EQ(renew_after(300s), 240s);    // one minute before
  EXPECT_EQ(renew_after(60s), 30s);      // half-way for short tokens
  EXPECT_EQ(renew_after(10s), 5s);
}

}  // namespace
}  // namespace mailroom::auth
