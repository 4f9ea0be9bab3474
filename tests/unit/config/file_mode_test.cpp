// Secret files that other users can read: File.read(...) in ERB warns with the
// mailbox and key the value went to; jwt_secret_path warns once. The file's
// content never appears in a diagnostic.
#include "config/erb.hpp"
#include "config/load.hpp"

#include "config_test_util.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

namespace mailroom::config {
namespace {

using std::filesystem::perms;
using test::load;
using test::no_env;
using test::temp_file;

constexpr perms mode_600 = perms::owner_read | perms::owner_write;
constexpr perms mode_640 = mode_600 | perms::group_read;
constexpr perms mode_644 = mode_640 | perms::others_read;
constexpr perms mode_604 = mode_600 | perms::others_read;

std::size_t count_diags(const load_result& r, const std::string& needle) {
  return static_cast<std::size_t>(std::count_if(
      r.diagnostics.begin(), r.diagnostics.end(),
      [&](const diagnostic& d) { return d.to_string().find(needle) != std::string::npos; }));
}

void expect_not_leaked(const load_result& r, const std::string& content) {
  for (const auto& line : test::lines_of(r)) {
    EXPECT_EQ(line.find(content), std::string::npos) << "leaked: " << line;
  }
}

TEST(file_mode, erb_records_files_readable_by_others) {
  temp_file open_file("Zq7-open-secret\n", mode_644);
  auto out =
      render_erb("a: 1\nb: <%= File.read('" + open_file.path() + "').strip %>\n", no_env(), ".");
  ASSERT_TRUE(out.errors.empty());
  ASSERT_EQ(out.warnings.size(), 1u);
  EXPECT_EQ(out.warnings[0].line, 2);
  EXPECT_EQ(out.warnings[0].insert, 0u);
  EXPECT_EQ(out.warnings[0].message,
            "File.read(\"" + open_file.path() +
                "\"): the file is readable by other users (mode 0644); chmod o-r it");

  // Owner only, or owner and group: no warning.
  for (auto mode : {mode_600, mode_640}) {
    temp_file closed("Zq7-closed-secret\n", mode);
    out = render_erb("b: <%= File.read('" + closed.path() + "') %>\n", no_env(), ".");
    EXPECT_TRUE(out.errors.empty());
    EXPECT_TRUE(out.warnings.empty()) << out.warnings[0].message;
  }
}

TEST(file_mode, erb_relative_paths_show_the_resolved_file) {
  temp_file f("Zq7-relative\n", mode_604);
  auto out = render_erb("a: <%= ERB::Util.url_encode(File.read('" + f.name() + "').chomp) %>\n",
                        no_env(), f.dir());
  ASSERT_EQ(out.warnings.size(), 1u);
  EXPECT_EQ(out.warnings[0].message, "File.read(\"" + f.name() + "\"): the file \"" + f.path() +
                                         "\" is readable by other users (mode 0604); chmod o-r it");
}

TEST(file_mode, load_names_the_mailbox_and_key) {
  temp_file pw("Zq7-imap-password\n", mode_644);
  auto r = load(
      "mailboxes:\n"
      "  - email: alice@example.com\n"
      "    password: <%= File.read('" +
      pw.path() +
      "').strip.to_json %>\n"  // line 3
      "    name: inbox\n"
      "    delivery_method: noop\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  ASSERT_EQ(r.diagnostics.size(), 1u) << test::dump(r);
  EXPECT_EQ(r.diagnostics[0].lvl, diagnostic::level::warning);
  EXPECT_EQ(r.diagnostics[0].to_string(),
            "config.yml:3: warning: mailbox alice@example.com/inbox: password: File.read(\"" +
                pw.path() + "\"): the file is readable by other users (mode 0644); chmod o-r it");
  EXPECT_EQ(r.cfg->mailboxes[0].password.reveal(), "Zq7-imap-password");
  expect_not_leaked(r, "Zq7");
}

TEST(file_mode, load_with_the_value_inside_a_url) {
  temp_file redis_pw("Zq7 redis p@ss\n", mode_644);
  temp_file sentinel_pw("Zq7-sentinel\n", mode_644);
  auto r = load(
      "mailboxes:\n"
      "  - email: alice@example.com\n"
      "    password: pw\n"
      "    name: inbox\n"
      "    delivery_method: sidekiq\n"
      "    delivery_options:\n"
      "      worker: EmailReceiverWorker\n"
      "      redis_url: redis://:<%= ERB::Util::url_encode(File.read(\"" +
      redis_pw.path() +
      "\").strip) %>@redis.example.com:6379\n"  // line 8
      "      sentinel_password: \"<%= File.read(\"" +
      sentinel_pw.path() + "\").strip %>\"\n");  // line 9
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_DIAG(r,
              "config.yml:8: warning: mailbox alice@example.com/inbox: delivery_options.redis_url: "
              "File.read(\"" +
                  redis_pw.path() + "\"): the file is readable by other users");
  EXPECT_DIAG(r,
              "config.yml:9: warning: mailbox alice@example.com/inbox: "
              "delivery_options.sentinel_password: File.read(\"" +
                  sentinel_pw.path() + "\"): the file is readable by other users");
  EXPECT_EQ(count_diags(r, "readable by other users"), 2u) << test::dump(r);
  expect_not_leaked(r, "Zq7");
}

TEST(file_mode, values_nobody_reads_still_warn_once) {
  temp_file f("Zq7-unused\n", mode_644);
  const std::string read = "<%= File.read('" + f.path() + "').strip %>";
  // An unknown key, and a key written by ERB: reported with the line only.
  auto r = load(std::string(test::minimal_mailbox) + "    not_a_key: " + read +
                "\n"  // line 6
                "    " +
                read + ": 1\n");  // line 7
  EXPECT_TRUE(r.ok()) << test::dump(r);
  EXPECT_EQ(count_diags(r, "readable by other users"), 2u) << test::dump(r);
  EXPECT_DIAG(r, "config.yml:6: warning: File.read(");
  EXPECT_DIAG(r, "config.yml:7: warning: File.read(");
  expect_not_leaked(r, "Zq7");
}

TEST(file_mode, warns_even_when_the_config_fails) {
  temp_file f("Zq7-failing\n", mode_644);
  // An ERB error elsewhere: the YAML is never read.
  auto r = load(std::string(test::minimal_mailbox) + "    host: <%= File.read('" + f.path() +
                "').strip %>\n"  // line 6
                "    port: <%= ENV.fetch('MISSING') %>\n");
  EXPECT_FALSE(r.ok());
  EXPECT_DIAG(r, "config.yml:6: warning: File.read(\"" + f.path() +
                     "\"): the file is readable by other users (mode 0644); chmod o-r it");

  // A YAML syntax error.
  r = load(std::string(test::minimal_mailbox) + "    host: <%= File.read('" + f.path() +
           "').strip %>\n    port: [\n");
  EXPECT_FALSE(r.ok());
  EXPECT_DIAG(r, "config.yml:6: warning: File.read(");
  expect_not_leaked(r, "Zq7");
}

TEST(file_mode, private_files_do_not_warn) {
  temp_file pw("Zq7-private\n", mode_600);
  auto r = load(
      "mailboxes:\n"
      "  - email: alice@example.com\n"
      "    password: <%= File.read('" +
      pw.path() +
      "').strip %>\n"
      "    name: inbox\n"
      "    delivery_method: noop\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.diagnostics.empty()) << test::dump(r);
}

TEST(file_mode, jwt_secret_path_warns_once) {
  // validate.cpp's check covers group and others; nothing else adds a second one.
  temp_file key("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n", mode_644);
  auto r = load(
      "mailboxes:\n"
      "  - email: alice@example.com\n"
      "    password: pw\n"
      "    name: inbox\n"
      "    delivery_options:\n"
      "      delivery_url: https://gitlab.example.com/api/v4/internal/mail_room/incoming_email\n"
      "      jwt_auth_header: Gitlab-Mailroom-Api-Request\n"
      "      jwt_issuer: gitlab-mailroom\n"
      "      jwt_secret_path: " +
      key.path() + "\n");  // line 9
  ASSERT_TRUE(r.ok()) << test::dump(r);
  ASSERT_EQ(r.diagnostics.size(), 1u) << test::dump(r);
  EXPECT_EQ(r.diagnostics[0].to_string(),
            "config.yml:9: warning: mailbox alice@example.com/inbox: "
            "delivery_options.jwt_secret_path: `" +
                key.path() +
                "` is readable by group or others (mode 0644); restrict it to the service user "
                "(chmod 600)");
  expect_not_leaked(r, "MDEyMzQ1");
}

}  // namespace
}  // namespace mailroom::config
