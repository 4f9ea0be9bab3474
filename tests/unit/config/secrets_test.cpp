// No diagnostic may ever contain a secret: passwords, tokens, URL passwords,
// JWT keys or anything ERB inserted. Each config below is full of mistakes
// around distinctive secret values, and every message is searched for them.
#include "config/load.hpp"

#include "config_test_util.hpp"

#include <gtest/gtest.h>

namespace mailroom::config {
namespace {

using test::env_of;
using test::load;
using test::temp_file;

// Every distinctive value contains this marker.
constexpr const char* marker = "Zq7";

void expect_no_secret(const load_result& r, const std::vector<std::string>& secrets) {
  ASSERT_FALSE(r.diagnostics.empty());
  for (const auto& line : test::lines_of(r)) {
    EXPECT_EQ(line.find(marker), std::string::npos) << "leaked: " << line;
    for (const auto& s : secrets) EXPECT_EQ(line.find(s), std::string::npos) << line;
  }
}

TEST(secrets, never_in_diagnostics_of_a_broken_config) {
  temp_file jwt("Zq7-jwt-not-base64!!\n");
  temp_file file_secret("Zq7-file-secret\n");
  const std::string text =
      "mailboxes:\n"
      "  - email: a@example.com\n"
      "    password: Zq7-imap-password\n"
      "    :password: Zq7-imap-password-2\n"
      "    name: inbox\n"
      "    idle_timeout: <%= ENV['S1'] %>\n"
      "    port: <%= ENV['S2'] %>\n"
      "    search_command: \"\"\n"
      "    arbitration_method: <%= File.read('" +
      file_secret.path() +
      "').strip %>\n"
      "    ssl: {verify_mode: <%= ENV['S3'] %>}\n"
      "    <%= ENV['S4'] %>: 1\n"
      "    inbox_options: {client_secret: Zq7-graph-secret}\n"
      "    delivery_token: {nested: Zq7-token-in-map}\n"
      "    delivery_method: sidekiq\n"
      "    delivery_options:\n"
      "      redis_url: http://user:Zq7-url-pw-1@redis.example.com\n"
      "      sentinels:\n"
      "        - port: 26379\n"
      "          password: Zq7-sentinel-entry-pw\n"
      "      sentinel_password: [Zq7-sentinel-pw-list]\n"
      "      password: Zq7-misplaced-password\n"
      "  - email: b@example.com\n"
      "    password: Zq7-second-password\n"
      "    name: inbox\n"
      "    delivery_method: Zq7-second-password\n"
      "    delivery_url: https://user:Zq7-url-pw-2@\n"
      "    delivery_token: Zq7-top-token\n"
      "    delivery_options:\n"
      "      token: Zq7-options-token\n"
      "      delivery_password: Zq7-basic-password\n"
      "      jwt_auth_header: X-Jwt\n"
      "      jwt_secret_path: " +
      jwt.path() +
      "\n"
      "      jwt_algorithm: <%= ENV['S5'] %>\n"
      "  - email: c@example.com\n"
      "    password: pw\n"
      "    name: inbox\n"
      "    delivery_method: sidekiq\n"
      "    delivery_options:\n"
      "      redis_url: redis://:Zq7-url-pw-3@redis.example.com:99999\n"
      "      worker: W\n"
      "    arbitration_method: redis\n"
      "    arbitration_options:\n"
      "      redis_url: redis://:Zq7-url-pw-4@10.0.0.1/notadb\n"
      "      key_format: <%= ENV['S6'] %>\n"
      "  - email: d@example.com\n"
      "    password: pw\n"
      "    name: inbox\n"
      "    delivery_method: sidekiq\n"
      "    delivery_options:\n"
      "      redis_url: redis://:Zq7-url-pw-5@10.0.0.1\n"
      "      sentinels: [{host: 10.0.0.2}]\n"
      "      worker: W\n"
      "  - email: e@example.com\n"
      "    password: pw\n"
      "    name: inbox\n"
      "    delivery_method: sidekiq\n"
      "    delivery_options:\n"
      "      redis_url: Zq7-not-a-url\n"
      "health_check:\n"
      "  type: <%= ENV['S7'] %>\n";
  auto r = load(text, env_of({{"S1", "Zq7-env-1"},
                              {"S2", "Zq7-env-2"},
                              {"S3", "Zq7-env-3"},
                              {"S4", "Zq7-env-key"},
                              {"S5", "Zq7-env-5"},
                              {"S6", "Zq7-env-6"},
                              {"S7", "Zq7-env-7"}}));
  EXPECT_FALSE(r.ok());
  // Enough problems were found for the test to mean something.
  EXPECT_GE(r.error_count(), 15u) << test::dump(r);
  EXPECT_GE(r.warning_count(), 5u) << test::dump(r);
  expect_no_secret(r, {});
}

TEST(secrets, never_in_yaml_syntax_errors) {
  auto r = load("mailboxes:\n  - password: \"Zq7-unterminated\n    name: [\n");
  expect_no_secret(r, {});
  r = load("mailboxes:\n  - password: <%= ENV['P'] %>\n    name: x: y: z\n",
           env_of({{"P", "Zq7-erb: \"broken"}}));
  expect_no_secret(r, {});
}

TEST(secrets, never_in_erb_errors) {
  temp_file invalid_utf8(std::string("Zq7-\xff\xfe"));
  auto r = load("a: <%= File.read('" + invalid_utf8.path() + "').to_json %>\n");
  expect_no_secret(r, {});
  r = load("a: <%= ENV['P'].to_i.strip %>\n", env_of({{"P", "Zq7"}}));
  expect_no_secret(r, {});
}

TEST(secrets, redis_url_for_display_has_no_password) {
  auto r = load(
      "mailboxes:\n"
      "  - email: a@example.com\n"
      "    password: pw\n"
      "    name: inbox\n"
      "    delivery_method: sidekiq\n"
      "    delivery_options:\n"
      "      redis_url: redis://user:Zq7-pw@redis.example.com:6379/1?password=Zq7-q\n"
      "      worker: W\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  const auto& redis = r.cfg->mailboxes[0].sidekiq.redis;
  EXPECT_EQ(redis.url, "redis://user@redis.example.com:6379/1");
  EXPECT_EQ(redis.password.reveal(), "Zq7-pw");
  expect_no_secret(r, {});  // the query warning must not echo it either
}

}  // namespace
}  // namespace mailroom::config
