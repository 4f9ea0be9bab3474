#include "delivery/postback.hpp"
#include "delivery/http_client.hpp"
#include "delivery/jwt.hpp"
#include "fake_http_server.hpp"

#include "support/temp_dir.hpp"

#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>

namespace mailroom::delivery {
namespace {

using test::fake_http_server;
using test::recorded_request;

template <class T>
T run_sync(boost::asio::awaitable<T> a) {
  boost::asio::io_context ctx;
  std::optional<T> out;
  boost::asio::co_spawn(ctx, std::move(a), [&](std::exception_ptr e, T v) {
    if (e) std::rethrow_exception(e);
    out.emplace(std::move(v));
  });
  ctx.run();
  return std::move(*out);
}

result deliver_sync(deliverer& d, const std::string& body) {
  mail_message m;
  m.body = body;
  return run_sync(d.deliver(m));
}

std::string base64url_decode(std::string_view in) {
  std::string std64(in);
  for (char& c : std64) {
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  while (std64.size() % 4 != 0) std64.push_back('=');
  std::vector<unsigned char> out(std64.size());
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(std64.data()),
                                static_cast<int>(std64.size()));
  const std::size_t pad = std::count(std64.end() - 2, std64.end(), '=');
  return std::string(reinterpret_cast<const char*>(out.data()), static_cast<std::size_t>(n) - pad);
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                         OSSL_PARAM_construct_end()};
  EVP_MAC_init(ctx, reinterpret_cast<const unsigned char*>(key.data()), key.size(), params);
  EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(data.data()), data.size());
  unsigned char out[EVP_MAX_MD_SIZE];
  std::size_t len = 0;
  EVP_MAC_final(ctx, out, &len, sizeof out);
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  return std::string(reinterpret_cast<const char*>(out), len);
}

// Checks a JWT as GitLab's authenticator would (HS256 with `key`, iss, iat) and
// returns its payload text.
std::string verify_jwt(const std::string& token, const std::string& key) {
  const std::size_t d1 = token.find('.');
  const std::size_t d2 = token.find('.', d1 + 1);
  EXPECT_NE(d2, std::string::npos);
  EXPECT_EQ(base64url_decode(token.substr(0, d1)), R"({"alg":"HS256"})");
  EXPECT_EQ(base64url_decode(token.substr(d2 + 1)), hmac_sha256(key, token.substr(0, d2)))
      << "signature does not verify";
  return base64url_decode(token.substr(d1 + 1, d2 - d1 - 1));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class PostbackTest : public ::testing::Test {
 protected:
  config::postback_options options_for(const fake_http_server& server) {
    config::postback_options o;
    o.url = server.url("/api/v4/internal/mail_room/incoming_email");
    return o;
  }
  std::string write_key(const std::string& base64_text) {
    const std::string path = dir_ + "/.gitlab_mailroom_secret";
    std::ofstream(path, std::ios::trunc) << base64_text;
    return path;
  }

  mailroom::test::temp_dir tmp_{"mailroom-postback"};
  const std::string dir_ = tmp_.str();
  http_client client_{2};
};

// Bytes a mail server may hand over: CRLF, 8-bit, invalid UTF-8, a NUL.
const std::string raw_message = std::string(
    "Return-Path: <a@example.com>\r\nSubject: caf\xE9\r\n\r\nbody \xC3\xA9 \xFF\0 end\r\n", 61);

TEST_F(PostbackTest, PostsTheRawBytesWithMailRoomsDefaultHeaders) {
  fake_http_server server(200);
  postback_deliverer d(options_for(server), client_, nullptr);
  EXPECT_STREQ(d.class_name(), "MailRoom::Delivery::Postback");

  const result r = deliver_sync(d, raw_message);
  EXPECT_TRUE(r.ok()) << r.ec.message() << " " << r.detail;

  const recorded_request req = server.next_request();
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.target, "/api/v4/internal/mail_room/incoming_email");
  EXPECT_EQ(req.body, raw_message);
  EXPECT_EQ(req.header("Content-Type"), "application/x-www-form-urlencoded");
  EXPECT_EQ(req.header("Content-Length"), std::to_string(raw_message.size()));
  EXPECT_TRUE(req.header("User-Agent").value_or("").starts_with("mailroom/"));
  EXPECT_FALSE(req.header("Authorization"));
  EXPECT_FALSE(req.header("Expect"));
  EXPECT_EQ(req.header_count("Content-Type"), 1u);
}

TEST_F(PostbackTest, ContentTypeFromOptions) {
  fake_http_server server(200);
  auto o = options_for(server);
  o.content_type = "text/plain";
  postback_deliverer d(o, client_, nullptr);
  ASSERT_TRUE(deliver_sync(d, "x").ok());
  const recorded_request req = server.next_request();
  EXPECT_EQ(req.header("Content-Type"), "text/plain");
  EXPECT_EQ(req.header_count("Content-Type"), 1u);
}

TEST_F(PostbackTest, TokenAuthorizationWinsOverBasic) {
  fake_http_server server(200);
  auto o = options_for(server);
  o.token = secret("abcdefg");
  o.username = "user";
  o.password = secret("pass");
  postback_deliverer d(o, client_, nullptr);
  ASSERT_TRUE(deliver_sync(d, "x").ok());
  const recorded_request req = server.next_request();
  EXPECT_EQ(req.header("Authorization"), "Token abcdefg");  // mail_room's spec asserts this
  EXPECT_EQ(req.header_count("Authorization"), 1u);
}

TEST_F(PostbackTest, BasicAuthorizationWithUsernameAndPassword) {
  fake_http_server server(200);
  auto o = options_for(server);
  o.username = "user";
  o.password = secret("p@ss:word");
  postback_deliverer d(o, client_, nullptr);
  ASSERT_TRUE(deliver_sync(d, "x").ok());
  // Ruby: Base64.strict_encode64("user:p@ss:word")
  EXPECT_EQ(server.next_request().header("Authorization"), "Basic dXNlcjpwQHNzOndvcmQ=");
}

TEST_F(PostbackTest, BasicAuthorizationNeedsBothUsernameAndPassword) {
  fake_http_server server(200);
  auto o = options_for(server);
  o.username = "user";
  postback_deliverer d(o, client_, nullptr);
  ASSERT_TRUE(deliver_sync(d, "x").ok());
  EXPECT_FALSE(server.next_request().header("Authorization"));
}

TEST_F(PostbackTest, JwtHeaderVerifiesAndFollowsARotatedSecret) {
  fake_http_server server(200);
  auto o = options_for(server);
  o.jwt_auth_header = "Gitlab-Mailroom-Api-Request";
  o.jwt_issuer = "gitlab-mailroom";
  // 32 bytes, as GitLab requires; the file ends with a newline like `puts` writes.
  const std::string key1 = "0123456789abcdef0123456789abcdef";
  o.jwt_secret_path = write_key(base64_encode(key1) + "\n");
  postback_deliverer d(o, client_, nullptr);

  const auto now = [] {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  const auto before = now();
  ASSERT_TRUE(deliver_sync(d, raw_message).ok());
  const auto after = now();
  const recorded_request req1 = server.next_request();
  const auto token1 = req1.header("Gitlab-Mailroom-Api-Request");
  ASSERT_TRUE(token1);
  const std::string payload1 = verify_jwt(*token1, key1);
  const std::regex claims(
      R"re(\{"nonce":"([0-9a-f]{24})","iat":(\d+),"iss":"gitlab-mailroom"\})re");
  std::smatch m;
  ASSERT_TRUE(std::regex_match(payload1, m, claims)) << payload1;
  const long long iat = std::stoll(m[2]);
  EXPECT_GE(iat, before);
  EXPECT_LE(iat, after);
  const std::string nonce1 = m[1];

  const std::string key2 = "fedcba9876543210fedcba9876543210";
  write_key(base64_encode(key2) + "\n");
  ASSERT_TRUE(deliver_sync(d, raw_message).ok());
  const auto token2 = server.next_request().header("Gitlab-Mailroom-Api-Request");
  ASSERT_TRUE(token2);
  const std::string payload2 = verify_jwt(*token2, key2);
  EXPECT_EQ(payload2.find(nonce1), std::string::npos) << "nonce reused";
}

TEST_F(PostbackTest, UnreadableJwtSecretIsMisconfiguredAndSendsNothing) {
  fake_http_server server(200);
  auto o = options_for(server);
  o.jwt_auth_header = "Gitlab-Mailroom-Api-Request";
  o.jwt_secret_path = dir_ + "/missing";
  postback_deliverer d(o, client_, nullptr);
  const result r = deliver_sync(d, "x");
  EXPECT_EQ(r.ec, make_error_code(errc::misconfigured));
  EXPECT_NE(r.detail.find("missing"), std::string::npos) << r.detail;

  write_key("not base64 at all");
  EXPECT_EQ(deliver_sync(d, "x").ec, make_error_code(errc::misconfigured));
  EXPECT_EQ(server.pending_requests(), 0u);
}

TEST_F(PostbackTest, OnlyTwoHundredsAreDelivered) {
  // The detail carries the start of the target's answer: it says why.
  fake_http_server server(500, "{\"message\":\"500 Internal\r\n  Server Error\"}\x01");
  postback_deliverer d(options_for(server), client_, nullptr);
  result r = deliver_sync(d, "x");
  EXPECT_EQ(r.ec, make_error_code(errc::rejected));
  EXPECT_EQ(r.detail, "HTTP 500: {\"message\":\"500 Internal Server Error\"}?");

  // Retried later: a redirect, credentials, a wrong URL, a target in trouble.
  for (int status : {302, 401, 403, 404, 408, 429, 502, 503}) {
    server.set_status(status);
    r = deliver_sync(d, "x");
    EXPECT_EQ(r.ec, make_error_code(errc::rejected)) << status;
    EXPECT_TRUE(r.detail.starts_with("HTTP " + std::to_string(status) + ": ")) << r.detail;
  }
  // Refused for good: this message will never be accepted (set aside).
  for (int status : {400, 413, 422}) {
    server.set_status(status);
    r = deliver_sync(d, "x");
    EXPECT_EQ(r.ec, make_error_code(errc::refused)) << status;
    EXPECT_TRUE(r.detail.starts_with("HTTP " + std::to_string(status) + ": ")) << r.detail;
  }
  for (int status : {200, 201, 204}) {
    server.set_status(status);
    EXPECT_TRUE(deliver_sync(d, "x").ok()) << status;
  }
}

TEST(AnswerExcerpt, IsShortPrintableAndFolded) {
  EXPECT_EQ(answer_excerpt(""), "");
  EXPECT_EQ(answer_excerpt(" \r\n"), "");
  EXPECT_EQ(answer_excerpt("  too\n\n large \xff"), ": too large ?");
  const std::string page(100000, 'x');
  EXPECT_EQ(answer_excerpt(page), ": " + std::string(200, 'x') + "...");
}

TEST_F(PostbackTest, LogsADeliveredMessageLikeMailRoomWithoutUserInfo) {
  fake_http_server server(200);
  auto o = options_for(server);
  o.url = "http://user:hunter2@127.0.0.1:" + std::to_string(server.port()) + "/hook";
  std::string error;
  const std::string log_path = dir_ + "/mail_room_json.log";
  auto logger = log::logger::to_file(log_path, error);
  ASSERT_TRUE(logger) << error;
  postback_deliverer d(o, client_, logger);
  server.set_status(500);
  EXPECT_EQ(deliver_sync(d, "x").ec, make_error_code(errc::rejected));
  server.next_request();
  // A refused message was not pushed: nothing is logged here (the watcher
  // logs "delivery failed").
  EXPECT_EQ(read_file(log_path), "");
  server.set_status(200);
  EXPECT_TRUE(deliver_sync(d, "x").ok());
  server.next_request();

  const std::string text = read_file(log_path);
  EXPECT_EQ(text.find("hunter2"), std::string::npos) << text;
  const auto line = nlohmann::ordered_json::parse(text.substr(0, text.find('\n')));
  EXPECT_EQ(line["severity"], "INFO");
  EXPECT_EQ(line["delivery_method"], "Postback");
  EXPECT_EQ(line["action"], "message pushed");
  EXPECT_EQ(line["url"], "http://127.0.0.1:" + std::to_string(server.port()) + "/hook");
  EXPECT_EQ(line["status_code"], 200);
  std::vector<std::string> keys;
  for (auto it = line.begin(); it != line.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"severity", "time", "delivery_method", "action", "url",
                                            "status_code"}));
}

TEST_F(PostbackTest, ConnectionRefusedIsTargetUnavailable) {
  config::postback_options o;
  o.url = "http://user:hunter2@127.0.0.1:" + std::to_string(test::unused_port()) + "/hook";
  o.token = secret("tok-secret");
  postback_deliverer d(o, client_, nullptr);
  const result r = deliver_sync(d, "x");
  EXPECT_EQ(r.ec, make_error_code(errc::target_unavailable));
  EXPECT_FALSE(r.detail.empty());
  EXPECT_EQ(r.detail.find("hunter2"), std::string::npos) << r.detail;
  EXPECT_EQ(r.detail.find("tok-secret"), std::string::npos) << r.detail;
}

TEST_F(PostbackTest, NoAnswerWithinTheResponseTimeoutIsTimedOut) {
  fake_http_server server(0);  // reads the request, never answers
  auto o = options_for(server);
  o.response_timeout = std::chrono::milliseconds(500);
  postback_deliverer d(o, client_, nullptr);
  const auto start = std::chrono::steady_clock::now();
  const result r = deliver_sync(d, raw_message);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.ec, make_error_code(errc::timed_out)) << r.detail;
  EXPECT_GE(elapsed, std::chrono::milliseconds(450));
  EXPECT_LT(elapsed, std::chrono::seconds(5));
  EXPECT_EQ(server.next_request().body, raw_message);
}

TEST_F(PostbackTest, LargeMessageIsSentWholeWithoutWaitingForContinue) {
  fake_http_server server(200);
  std::string big(3 * 1024 * 1024 + 7, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 131) % 251);
  postback_deliverer d(options_for(server), client_, nullptr);
  ASSERT_TRUE(deliver_sync(d, big).ok());
  const recorded_request req = server.next_request();
  EXPECT_FALSE(req.header("Expect"));
  EXPECT_TRUE(req.body == big);
}

// The one test that changes the process environment: http_proxy is set just
// before the request and restored right after it, and no other test runs
// concurrently in this process (gtest runs tests sequentially).
TEST_F(PostbackTest, HonoursHttpProxyFromTheEnvironment) {
  fake_http_server proxy(200);
  const auto save = [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    return v ? std::optional<std::string>(v) : std::nullopt;
  };
  const auto restore = [](const char* name, const std::optional<std::string>& v) {
    if (v) {
      ::setenv(name, v->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  };
  const auto saved_proxy = save("http_proxy");
  const auto saved_no_proxy = save("no_proxy");
  const auto saved_no_proxy_upper = save("NO_PROXY");

  config::postback_options o;
  o.url = "http://gitlab.example.invalid/api/v4/internal/mail_room/incoming_email";
  postback_deliverer d(o, client_, nullptr);
  ::setenv("http_proxy", ("http://127.0.0.1:" + std::to_string(proxy.port())).c_str(), 1);
  ::unsetenv("no_proxy");
  ::unsetenv("NO_PROXY");
  const result r = deliver_sync(d, "x");
  restore("http_proxy", saved_proxy);
  restore("no_proxy", saved_no_proxy);
  restore("NO_PROXY", saved_no_proxy_upper);

  EXPECT_TRUE(r.ok()) << r.ec.message() << " " << r.detail;
  const recorded_request req = proxy.next_request();
  EXPECT_EQ(req.target, "http://gitlab.example.invalid/api/v4/internal/mail_room/incoming_email");
  EXPECT_EQ(req.header("Host"), "gitlab.example.invalid");
  EXPECT_EQ(req.body, "x");
}

// http_client on its own.

boost::system::result<http_response> perform_sync(http_client& c, http_request req,
                                                  std::string& detail) {
  return run_sync(c.perform(std::move(req), detail));
}

TEST(HttpClient, CompletesOnTheCallersExecutor) {
  fake_http_server server(200);
  http_client client(2);
  boost::asio::io_context ctx;
  std::promise<std::pair<std::thread::id, long>> done;
  std::string detail;
  boost::asio::co_spawn(
      ctx,
      [&]() -> boost::asio::awaitable<void> {
        http_request req;
        req.url = server.url("/");
        auto r = co_await client.perform(std::move(req), detail);
        done.set_value({std::this_thread::get_id(), r ? r->status : -1});
      },
      boost::asio::detached);
  std::thread loop([&] { ctx.run(); });
  const std::thread::id loop_id = loop.get_id();
  auto [resumed_on, status] = done.get_future().get();
  loop.join();
  EXPECT_EQ(resumed_on, loop_id);
  EXPECT_EQ(status, 200);
}

TEST(HttpClient, ResponseBodyIsCappedAt64KiB) {
  fake_http_server server(200, std::string(200 * 1024, 'b'));
  http_client client(1);
  http_request req;
  req.url = server.url("/big");
  std::string detail;
  auto r = perform_sync(client, std::move(req), detail);
  ASSERT_TRUE(r) << detail;
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body.size(), http_response::max_body_size);
}

TEST(HttpClient, ABodyLimitOfItsOwnAndTheCutIsReported) {
  fake_http_server server(200, std::string(300 * 1024, 'b'));
  http_client client(1);
  std::string detail;
  http_request req;
  req.url = server.url("/big");
  req.max_response_body = 1024 * 1024;
  auto r = perform_sync(client, req, detail);
  ASSERT_TRUE(r) << detail;
  EXPECT_EQ(r->body.size(), 300u * 1024);
  EXPECT_FALSE(r->truncated);
  req.max_response_body = 1000;
  r = perform_sync(client, req, detail);
  ASSERT_TRUE(r) << detail;
  EXPECT_EQ(r->body.size(), 1000u);
  EXPECT_TRUE(r->truncated);
}

TEST(HttpClient, KeepsTheResponseHeadersAskedFor) {
  fake_http_server server(429, "{}");
  server.set_extra_headers("retry-after:  7 \r\nX-Other: no\r\n");
  http_client client(1);
  std::string detail;
  http_request req;
  req.url = server.url("/throttled");
  req.capture_headers = {"Retry-After"};
  auto r = perform_sync(client, req, detail);
  ASSERT_TRUE(r) << detail;
  EXPECT_EQ(r->status, 429);
  ASSERT_EQ(r->headers.size(), 1u);
  ASSERT_NE(r->header("retry-after"), nullptr);
  EXPECT_EQ(*r->header("Retry-After"), "7");
  EXPECT_EQ(r->header("X-Other"), nullptr);
}

TEST(HttpClient, HeaderInjectionIsRefused) {
  http_client client(1);
  http_request req;
  req.url = "http://127.0.0.1:1/";
  req.headers.emplace_back("X-Test", "a\r\nInjected: yes");
  std::string detail;
  auto r = perform_sync(client, std::move(req), detail);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(errc::misconfigured));
  EXPECT_EQ(detail.find("Injected"), std::string::npos) << detail;
}

TEST(HttpClient, MalformedUrlIsMisconfigured) {
  http_client client(1);
  http_request req;
  req.url = "ftp://127.0.0.1/";
  std::string detail;
  auto r = perform_sync(client, std::move(req), detail);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), make_error_code(errc::misconfigured)) << detail;
}

TEST(HttpClient, DestructionAbortsARequestInFlight) {
  fake_http_server server(0);  // never answers
  boost::asio::io_context ctx;
  std::promise<boost::system::error_code> done;
  std::string detail;
  auto client = std::make_unique<http_client>(1);
  boost::asio::co_spawn(
      ctx,
      [&]() -> boost::asio::awaitable<void> {
        http_request req;
        req.url = server.url("/");
        req.total_timeout = std::chrono::seconds(60);
        auto r = co_await client->perform(std::move(req), detail);
        done.set_value(r ? boost::system::error_code() : r.error());
      },
      boost::asio::detached);
  std::thread loop([&] { ctx.run(); });
  server.next_request();  // the request is in flight
  const auto start = std::chrono::steady_clock::now();
  client.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(done.get_future().get(), make_error_code(errc::target_unavailable));
  loop.join();
}

}  // namespace
}  // namespace mailroom::delivery
