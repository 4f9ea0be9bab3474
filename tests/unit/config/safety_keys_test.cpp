// The keys mailroom adds for safety and robustness (not in mail_room):
// plaintext LOGIN, timeouts, oversize messages, permanent errors, claim TTL,
// stuck_after. Each mistake names file:line, mailbox and key.
#include "config/load.hpp"

#include "config_test_util.hpp"

#include <gtest/gtest.h>

namespace mailroom::config {
namespace {

using namespace std::chrono_literals;
using test::load;

// Lines 1-5; the next line written by a test is line 6.
const std::string head =
    "mailboxes:\n"
    "  - email: alice@example.com\n"
    "    password: pw\n"
    "    name: inbox\n"
    "    delivery_method: noop\n";

TEST(safety_keys, defaults) {
  auto r = load(head);
  ASSERT_TRUE(r.ok()) << test::dump(r);
  const auto& mb = r.cfg->mailboxes[0];
  EXPECT_FALSE(mb.allow_plaintext_login);
  EXPECT_EQ(mb.connect_timeout, 30s);
  EXPECT_EQ(mb.command_timeout, 120s);
  EXPECT_EQ(mb.idle_check_interval, 300s);
  EXPECT_EQ(mb.max_message_size, 25u * 1024 * 1024);
  EXPECT_EQ(mb.on_oversize, oversize_action::flag);
  EXPECT_EQ(mb.oversize_keyword, "$MailroomOversize");
  EXPECT_EQ(mb.on_permanent_error, permanent_error_policy::exit_at_startup);
  EXPECT_EQ(mb.arbitration_opts.claim_ttl, 10s);
  EXPECT_EQ(r.cfg->health.stuck_after, 900s);
}

TEST(safety_keys, plaintext_login_needs_an_explicit_setting) {
  auto r = load(head + "    ssl: false\n");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: ssl: is false and start_tls is not "
              "set: LOGIN would send the password unencrypted. Use ssl: true (port 993) or "
              "start_tls: true (port 143), or set allow_plaintext_login: true for a server on a "
              "trusted network");
  EXPECT_TRUE(load(head + "    ssl: false\n    start_tls: true\n").ok());
  auto allowed = load(head + "    ssl: false\n    allow_plaintext_login: true\n");
  ASSERT_TRUE(allowed.ok()) << test::dump(allowed);
  EXPECT_TRUE(allowed.cfg->mailboxes[0].allow_plaintext_login);
}

TEST(safety_keys, values_are_read) {
  auto r = load(head +
                "    connect_timeout: 5\n    command_timeout: 7\n    idle_check_interval: 60\n"
                "    max_message_size: 1048576\n    oversize_action: move\n"
                "    oversize_folder: Too big\n    on_permanent_error: retry\n"
                "    arbitration_method: redis\n    arbitration_options:\n      claim_ttl: 30\n"
                "health_check:\n  address: 127.0.0.1\n  port: 8080\n  stuck_after: 600\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  const auto& mb = r.cfg->mailboxes[0];
  EXPECT_EQ(mb.connect_timeout, 5s);
  EXPECT_EQ(mb.command_timeout, 7s);
  EXPECT_EQ(mb.idle_check_interval, 60s);
  EXPECT_EQ(mb.max_message_size, 1048576u);
  EXPECT_EQ(mb.on_oversize, oversize_action::move);
  EXPECT_EQ(mb.oversize_folder, "Too big");
  EXPECT_EQ(mb.on_permanent_error, permanent_error_policy::retry);
  EXPECT_EQ(mb.arbitration_opts.claim_ttl, 30s);
  EXPECT_EQ(r.cfg->health.stuck_after, 600s);
}

TEST(safety_keys, mistakes_name_the_key_and_line) {
  auto r = load(head + "    command_timeout: 0\n");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: command_timeout: must be between 1 "
              "and 3600 (got 0)");
  r = load(head + "    oversize_action: delete\n");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: oversize_action: unknown value "
              "`delete`: expected flag or move");
  r = load(head + "    oversize_action: move\n");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: oversize_folder: is required with "
              "oversize_action: move");
  r = load(head + "    oversize_keyword: two words\n");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: oversize_keyword: must be an IMAP "
              "keyword: letters, digits and $-_. without spaces (got `two words`)");
  r = load(head + "    on_permanent_error: crash\n");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: on_permanent_error: unknown value "
              "`crash`: expected exit_at_startup, retry or exit");
  r = load(head + "    max_message_size: 10\n");
  EXPECT_EQ(r.error_count(), 1u) << test::dump(r);
  EXPECT_NE(test::dump(r).find("max_message_size"), std::string::npos) << test::dump(r);
}

TEST(safety_keys, set_aside_keys) {
  auto r = load(head);
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_EQ(r.cfg->mailboxes[0].rejected_keyword, "$MailroomRejected");
  EXPECT_EQ(r.cfg->mailboxes[0].rejected_folder, "");
  EXPECT_EQ(r.cfg->mailboxes[0].max_message_age, 0s);
  EXPECT_EQ(r.cfg->mailboxes[0].too_old_keyword, "$MailroomTooOld");
  EXPECT_EQ(r.cfg->mailboxes[0].max_job_size, 0u);

  r = load(head +
           "    rejected_folder: Rejected\n    max_message_age: 7d\n"
           "    too_old_folder: Old\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.diagnostics.empty()) << test::dump(r);
  EXPECT_EQ(r.cfg->mailboxes[0].rejected_folder, "Rejected");
  EXPECT_EQ(r.cfg->mailboxes[0].max_message_age, 7 * 86400s);
  EXPECT_EQ(r.cfg->mailboxes[0].too_old_folder, "Old");
  for (const auto& [text, want] : std::vector<std::pair<std::string, std::chrono::seconds>>{
           {"90", 90s}, {"90s", 90s}, {"30m", 1800s}, {"12h", 43200s}, {"2w", 14 * 86400s}}) {
    r = load(head + "    max_message_age: " + text + "\n");
    ASSERT_TRUE(r.ok()) << text << test::dump(r);
    EXPECT_EQ(r.cfg->mailboxes[0].max_message_age, want) << text;
  }
  r = load(head + "    max_message_age: 7 days\n");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: max_message_age: must be a "
              "duration like 7d, 12h, 30m or a number of seconds (got `7 days`)");
  r = load(head + "    max_message_age:\n");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: max_message_age: must not be null");
  r = load(head + "    rejected_keyword: not ok\n");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: rejected_keyword: must be an IMAP "
              "keyword");
  r = load(head + "    too_old_folder: Old\n");
  EXPECT_DIAG(
      r,
      "config.yml:6: warning: mailbox alice@example.com/inbox: too_old_folder: is only used "
      "with max_message_age (ignored)");
  r = load(head + "    max_job_size: 1000\n");
  EXPECT_DIAG(
      r,
      "config.yml:6: warning: mailbox alice@example.com/inbox: max_job_size: is only used by "
      "delivery_method sidekiq and que (ignored)");
  r = load(head + "    max_job_size: -1\n");
  EXPECT_DIAG(r, "config.yml:6: mailbox alice@example.com/inbox: max_job_size:");
}

TEST(safety_keys, stuck_after_below_the_idle_renewal_is_a_warning) {
  auto r = load(head + "    idle_check_interval: 600\n" +
                "health_check:\n  port: 8080\n  stuck_after: 600\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_NE(test::dump(r).find("health_check.stuck_after: 600 s is not above "
                               "idle_check_interval + command_timeout of mailbox "
                               "alice@example.com/inbox (720 s)"),
            std::string::npos)
      << test::dump(r);
}

TEST(safety_keys, a_short_claim_ttl_with_a_slow_webhook_is_fine) {
  // Claims are renewed while their delivery runs: claim_ttl only bounds how
  // long a dead instance's claims block the message, not how long a
  // delivery may take.
  auto r = load(
      "mailboxes:\n"
      "  - email: alice@example.com\n"
      "    password: pw\n"
      "    name: inbox\n"
      "    delivery_options:\n"
      "      delivery_url: https://gitlab.example.com/api/v4/internal/mail_room/incoming_email\n"
      "      delivery_token: t\n"
      "    arbitration_method: redis\n"
      "    arbitration_options:\n"
      "      claim_ttl: 5\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_EQ(test::dump(r).find("claim_ttl"), std::string::npos) << test::dump(r);
}

}  // namespace
}  // namespace mailroom::config
