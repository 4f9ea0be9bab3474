// One test per kind of mistake, asserting the whole message: file:line,
// mailbox label, key and text.
#include "config/load.hpp"

#include "config_test_util.hpp"

#include <gtest/gtest.h>

namespace mailroom::config {
namespace {

using test::env_of;
using test::load;
using test::temp_file;

// Lines 1-4; the next line written by a test is line 5.
const std::string head =
    "mailboxes:\n"
    "  - email: alice@example.com\n"
    "    password: pw\n"
    "    name: inbox\n";
const std::string noop = head + "    delivery_method: noop\n";  // next line: 6

TEST(load, minimal_mailbox_gets_mail_room_defaults) {
  auto r = load(noop);
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.diagnostics.empty()) << test::dump(r);
  ASSERT_EQ(r.cfg->mailboxes.size(), 1u);
  const auto& mb = r.cfg->mailboxes[0];
  EXPECT_EQ(r.cfg->path, "config.yml");
  EXPECT_EQ(mb.where.line, 2);
  EXPECT_EQ(mb.email, "alice@example.com");
  EXPECT_EQ(mb.password.reveal(), "pw");
  EXPECT_EQ(mb.name, "inbox");
  EXPECT_EQ(mb.host, "imap.gmail.com");
  EXPECT_EQ(mb.port, 993);
  EXPECT_TRUE(mb.ssl.enabled);
  EXPECT_TRUE(mb.ssl.verify_peer);
  EXPECT_FALSE(mb.start_tls);
  EXPECT_EQ(mb.idle_timeout, std::chrono::seconds(1740));
  EXPECT_EQ(mb.search_command, "UNSEEN");
  EXPECT_EQ(mb.limit_max_unread, 0u);
  EXPECT_EQ(mb.after_delivery, after_delivery_action::seen);
  EXPECT_FALSE(mb.expunge_deleted);
  EXPECT_EQ(mb.delivery, delivery_method::noop);
  EXPECT_EQ(mb.arbitration, arbitration_method::noop);
  EXPECT_EQ(mb.log.where, log_destination::kind::discard);
  EXPECT_FALSE(r.cfg->health.enabled);
}

TEST(load, missing_required_key) {
  auto r = load(
      "mailboxes:\n"
      "  - password: pw\n"
      "    name: inbox\n"
      "    delivery_method: noop\n");
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(r.cfg);
  EXPECT_DIAG(r, "config.yml:2: mailbox mailboxes[0]: email: is required");

  r = load(
      "mailboxes:\n"
      "  - email: alice@example.com\n"
      "    name: inbox\n"
      "    delivery_method: noop\n");
  EXPECT_DIAG(r, "config.yml:2: mailbox alice@example.com/inbox: password: is required");
  EXPECT_EQ(r.error_count(), 1u) << test::dump(r);
}

TEST(load, wrong_types_name_key_line_and_expected_type) {
  auto r = load(noop +
                "    port: imap\n"
                "    ssl: maybe\n"
                "    delete_after_delivery: \"true\"\n"
                "    idle_timeout: [1]\n"
                "    limit_max_unread: 2.5\n");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: port: must be an integer (got a "
              "string)");
  EXPECT_DIAG(r,
              "config.yml:7: mailbox alice@example.com/inbox: ssl: must be true, false or a "
              "mapping with verify_mode, ca_file, ca_path (got a string)");
  EXPECT_DIAG(r,
              "config.yml:8: mailbox alice@example.com/inbox: delete_after_delivery: must be "
              "true or false (got a quoted string, which mail_room treats as true)");
  EXPECT_DIAG(r,
              "config.yml:9: mailbox alice@example.com/inbox: idle_timeout: must be an integer "
              "(got a list)");
  EXPECT_DIAG(r,
              "config.yml:10: mailbox alice@example.com/inbox: limit_max_unread: must be an "
              "integer (got a decimal number)");
  EXPECT_EQ(r.error_count(), 5u) << test::dump(r);

  r = load(noop + "    delivery_options: [a]\n");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: delivery_options: must be a "
              "mapping (got a list)");
}

TEST(load, quoted_numbers_and_yaml11_booleans_are_accepted) {
  auto r = load(noop +
                "    port: \"143\"\n"
                "    ssl: no\n"
                "    start_tls: yes\n"
                "    delete_after_delivery: True\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  const auto& mb = r.cfg->mailboxes[0];
  EXPECT_EQ(mb.port, 143);
  EXPECT_FALSE(mb.ssl.enabled);
  EXPECT_TRUE(mb.start_tls);
  EXPECT_EQ(mb.after_delivery, after_delivery_action::remove);
}

TEST(load, start_tls_with_an_ssl_mapping_is_starttls_with_those_settings) {
  auto r = load(noop +
                "    port: 143\n"
                "    start_tls: true\n"
                "    ssl: {ca_file: /etc/ssl/private-ca.pem, verify_mode: peer}\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_EQ(r.diagnostics.size(), 0u) << test::dump(r);
  const auto& mb = r.cfg->mailboxes[0];
  EXPECT_TRUE(mb.start_tls);
  EXPECT_FALSE(mb.ssl.enabled) << "no implicit TLS: STARTTLS on the plain port";
  EXPECT_EQ(mb.ssl.ca_file, "/etc/ssl/private-ca.pem");
  EXPECT_TRUE(mb.ssl.verify_peer);

  // ssl: true with start_tls stays what mail_room does (TLS, then STARTTLS
  // inside it), with a warning.
  r = load(noop + "    start_tls: true\n    ssl: true\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.cfg->mailboxes[0].ssl.enabled);
  EXPECT_EQ(r.warning_count(), 1u) << test::dump(r);
}

TEST(load, explicit_null_for_a_key_with_a_default) {
  auto r = load(noop + "    port: ~\n    idle_timeout:\n");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: port: must not be null (remove "
              "the key to use the default)");
  EXPECT_DIAG(r, "config.yml:7: mailbox alice@example.com/inbox: idle_timeout: must not be null");
}

TEST(load, bad_enum_values) {
  auto r = load(head + "    delivery_method: pigeon\n    arbitration_method: etcd\n");
  EXPECT_DIAG(r,
              "config.yml:5: mailbox alice@example.com/inbox: delivery_method: unknown "
              "delivery method `pigeon`: expected postback, sidekiq, que, logger, letter_opener or "
              "noop");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: arbitration_method: unknown "
              "arbitration method `etcd`: expected noop or redis");

  r = load(noop + "    ssl:\n      verify_mode: sometimes\n");
  EXPECT_DIAG(r,
              "config.yml:7: mailbox alice@example.com/inbox: ssl.verify_mode: unknown "
              "verify_mode `sometimes`: expected none or peer");

  r = load(head + "    delivery_method: webhook\n");
  EXPECT_DIAG(r,
              "delivery_method: unknown delivery method `webhook`: GitLab's webhook delivery "
              "is `postback`");
}

TEST(load, symbol_values_are_accepted_for_enums) {
  auto r = load(head +
                "    delivery_method: :noop\n    arbitration_method: :noop\n"
                "    ssl:\n      verify_mode: :none\n      ca_file: /etc/ca.pem\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  const auto& mb = r.cfg->mailboxes[0];
  EXPECT_EQ(mb.delivery, delivery_method::noop);
  EXPECT_TRUE(mb.ssl.enabled);
  EXPECT_FALSE(mb.ssl.verify_peer);
  EXPECT_EQ(mb.ssl.ca_file, "/etc/ca.pem");

  for (const char* mode : {"peer", "client_once", "fail_if_no_peer_cert", "'none'"}) {
    r = load(noop + "    ssl:\n      :verify_mode: " + mode + "\n");
    ASSERT_TRUE(r.ok()) << mode << test::dump(r);
    EXPECT_EQ(r.cfg->mailboxes[0].ssl.verify_peer, std::string(mode) != "'none'") << mode;
  }
}

TEST(load, turning_certificate_verification_off_is_a_warning) {
  auto r = load(noop + "    ssl:\n      verify_mode: none\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_FALSE(r.cfg->mailboxes[0].ssl.verify_peer);
  EXPECT_DIAG(
      r,
      "config.yml:7: warning: mailbox alice@example.com/inbox: ssl.verify_mode: certificate "
      "verification is off: a machine in the network path can impersonate the server and "
      "read the credentials and the mail");

  r = load(noop + "    ssl:\n      verify_mode: peer\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.diagnostics.empty()) << test::dump(r);
}

TEST(load, idle_timeout_too_large) {
  auto r = load(noop + "    idle_timeout: 1800\n");
  ASSERT_EQ(r.diagnostics.size(), 1u) << test::dump(r);
  EXPECT_EQ(r.diagnostics[0].to_string(),
            "config.yml:6: mailbox alice@example.com/inbox: idle_timeout: must be at most 1740 "
            "(got 1800): Please use an idle timeout smaller than 1740 to prevent IMAP server "
            "disconnects");
  EXPECT_EQ(r.diagnostics[0].where.line, 6);
  EXPECT_EQ(r.diagnostics[0].mailbox, "alice@example.com/inbox");
  EXPECT_EQ(r.diagnostics[0].key, "idle_timeout");

  EXPECT_TRUE(load(noop + "    idle_timeout: 1740\n").ok());
  r = load(noop + "    idle_timeout: 0\n");
  EXPECT_DIAG(r, "idle_timeout: must be at least 1 second (got 0)");
}

TEST(load, bad_port) {
  auto r = load(noop + "    port: 70000\n");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: port: must be between 1 and "
              "65535 (got 70000)");
  r = load(noop + "    port: 0\n");
  EXPECT_DIAG(r, "port: must be between 1 and 65535 (got 0)");
}

std::string sidekiq_with_url(const std::string& url) {
  return head +
         "    delivery_method: sidekiq\n"
         "    delivery_options:\n"
         "      redis_url: " +
         url +
         "\n"
         "      worker: EmailReceiverWorker\n";
}

TEST(load, bad_redis_url) {
  auto r = load(sidekiq_with_url("http://localhost:6379"));
  EXPECT_DIAG(r,
              "config.yml:7: mailbox alice@example.com/inbox: delivery_options.redis_url: "
              "unsupported scheme `http`: expected redis:// or rediss://");
  r = load(sidekiq_with_url("unix:///var/run/redis.sock"));
  EXPECT_DIAG(r, "delivery_options.redis_url: unix sockets are not supported");
  r = load(sidekiq_with_url("redis://localhost:port"));
  EXPECT_DIAG(r, "delivery_options.redis_url: has an invalid port");
  r = load(sidekiq_with_url("redis://localhost:6379/zero"));
  EXPECT_DIAG(r, "delivery_options.redis_url: has an invalid database in its path");
  r = load(sidekiq_with_url("localhost:6379"));
  EXPECT_DIAG(r, "delivery_options.redis_url: must be a URL like redis://host:6379/0");
  r = load(sidekiq_with_url("redis://:pw@/0"));
  EXPECT_DIAG(r, "delivery_options.redis_url: has no host");
}

TEST(load, redis_url_fields) {
  auto r = load(sidekiq_with_url("redis://us%40r:p%2Bw+x@redis.example.com:6380/3"));
  ASSERT_TRUE(r.ok()) << test::dump(r);
  const auto& redis = r.cfg->mailboxes[0].sidekiq.redis;
  EXPECT_EQ(redis.host, "redis.example.com");
  EXPECT_EQ(redis.port, 6380);
  EXPECT_EQ(redis.db, 3);
  EXPECT_FALSE(redis.tls);
  EXPECT_EQ(redis.username, "us@r");
  EXPECT_EQ(redis.password.reveal(), "p+w x");  // CGI.unescape, as redis-rb decodes
  EXPECT_EQ(redis.url, "redis://us%40r@redis.example.com:6380/3");
  EXPECT_EQ(r.cfg->mailboxes[0].sidekiq.queue, "default");
  EXPECT_EQ(r.cfg->mailboxes[0].sidekiq.worker, "EmailReceiverWorker");

  r = load(sidekiq_with_url("redis://[::1]:7000"));
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_EQ(r.cfg->mailboxes[0].sidekiq.redis.host, "::1");
  EXPECT_EQ(r.cfg->mailboxes[0].sidekiq.redis.port, 7000);
}

TEST(load, rediss_enables_tls_and_ssl_params_apply) {
  auto r = load(head +
                "    delivery_method: sidekiq\n"
                "    delivery_options:\n"
                "      redis_url: rediss://:pw@redis.example.com:6380\n"
                "      redis_db: 4\n"
                "      redis_ssl_params:\n"
                "        verify_mode: none\n"
                "        ca_file: /etc/ssl/redis-ca.pem\n"
                "      worker: EmailReceiverWorker\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  const auto& redis = r.cfg->mailboxes[0].sidekiq.redis;
  EXPECT_TRUE(redis.tls);
  EXPECT_EQ(redis.port, 6380);
  EXPECT_EQ(redis.db, 4);  // redis_db overrides the URL
  EXPECT_FALSE(redis.tls_settings.verify_peer);
  EXPECT_EQ(redis.tls_settings.ca_file, "/etc/ssl/redis-ca.pem");
  EXPECT_EQ(redis.url, "rediss://redis.example.com:6380");

  r = load(head +
           "    delivery_method: sidekiq\n"
           "    delivery_options:\n"
           "      redis_url: redis://redis.example.com\n"
           "      redis_ssl_params: {ca_file: /x}\n"
           "      worker: W\n");
  EXPECT_DIAG(r,
              "config.yml:8: warning: mailbox alice@example.com/inbox: "
              "delivery_options.redis_ssl_params: has no effect: redis_url does not use "
              "rediss://");
}

TEST(load, sentinel_master_name_comes_from_the_url_host) {
  auto r = load(head +
                "    delivery_method: sidekiq\n"
                "    delivery_options:\n"
                "      redis_url: redis://:masterpw@gitlab-redis/2\n"
                "      sentinels:\n"
                "        - host: s1.example.com\n"
                "          port: 26380\n"
                "        - :host: s2.example.com\n"
                "          :password: sentpw\n"
                "      sentinel_username: sentuser\n"
                "      sentinel_password: allsentpw\n"
                "      namespace: resque:gitlab\n"
                "      queue: email_receiver\n"
                "      worker: EmailReceiverWorker\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  const auto& redis = r.cfg->mailboxes[0].sidekiq.redis;
  EXPECT_TRUE(redis.uses_sentinel());
  EXPECT_EQ(redis.host, "gitlab-redis");
  EXPECT_EQ(redis.password.reveal(), "masterpw");
  EXPECT_EQ(redis.db, 2);
  ASSERT_EQ(redis.sentinels.size(), 2u);
  EXPECT_EQ(redis.sentinels[0].host, "s1.example.com");
  EXPECT_EQ(redis.sentinels[0].port, 26380);
  EXPECT_EQ(redis.sentinels[1].host, "s2.example.com");
  EXPECT_EQ(redis.sentinels[1].port, 26379);
  EXPECT_EQ(redis.sentinels[1].password.reveal(), "sentpw");
  EXPECT_EQ(redis.sentinel_username, "sentuser");
  EXPECT_EQ(redis.sentinel_password.reveal(), "allsentpw");
  EXPECT_EQ(redis.namespace_prefix, "resque:gitlab");
  EXPECT_EQ(redis.key("queue:email_receiver"), "resque:gitlab:queue:email_receiver");
  EXPECT_EQ(r.cfg->mailboxes[0].sidekiq.queue, "email_receiver");

  // An address where the master name belongs only fails much later.
  r = load(head +
           "    delivery_method: sidekiq\n"
           "    delivery_options:\n"
           "      redis_url: redis://127.0.0.1:16379\n"
           "      sentinels: [{host: 127.0.0.1, port: 26379}]\n"
           "      worker: W\n");
  EXPECT_DIAG(r,
              "config.yml:7: warning: mailbox alice@example.com/inbox: "
              "delivery_options.redis_url: with sentinels the host of redis_url names the "
              "Sentinel master");

  r = load(head +
           "    delivery_method: sidekiq\n"
           "    delivery_options:\n"
           "      sentinels:\n"
           "        - port: 1\n"
           "        - host: s\n"
           "          ssl: true\n"
           "      worker: W\n");
  EXPECT_DIAG(r,
              "config.yml:8: mailbox alice@example.com/inbox: "
              "delivery_options.sentinels[0].host: is required");
  EXPECT_DIAG(r,
              "config.yml:10: mailbox alice@example.com/inbox: "
              "delivery_options.sentinels[1].ssl: TLS connections to Sentinels are not "
              "supported");
}

TEST(load, que_and_letter_opener) {
  auto r = load(head +
                "    delivery_method: que\n"
                "    delivery_options:\n"
                "      host: db.example.com\n"
                "      port: 5433\n"
                "      database: gitlab\n"
                "      username: git\n"
                "      password: pg-secret\n"
                "      queue: mail\n"
                "      priority: 7\n"
                "      job_class: EmailReceiverJob\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.diagnostics.empty()) << test::dump(r);
  const auto& q = r.cfg->mailboxes[0].que;
  EXPECT_EQ(r.cfg->mailboxes[0].delivery, delivery_method::que);
  EXPECT_EQ(q.host, "db.example.com");
  EXPECT_EQ(q.port, 5433);
  EXPECT_EQ(q.database, "gitlab");
  EXPECT_EQ(q.username, "git");
  EXPECT_EQ(q.password.reveal(), "pg-secret");
  EXPECT_EQ(q.queue, "mail");
  EXPECT_EQ(q.priority, 7);
  EXPECT_EQ(q.job_class, "EmailReceiverJob");

  // mail_room's defaults; job_class is required (a NULL job_class fits no Que schema).
  r = load(head + "    delivery_method: que\n    delivery_options:\n      job_class: J\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_EQ(r.cfg->mailboxes[0].que.host, "localhost");
  EXPECT_EQ(r.cfg->mailboxes[0].que.port, 5432);
  EXPECT_EQ(r.cfg->mailboxes[0].que.queue, "");
  EXPECT_EQ(r.cfg->mailboxes[0].que.priority, 100);
  r = load(head + "    delivery_method: que\n");
  EXPECT_DIAG(r,
              "mailbox alice@example.com/inbox: delivery_options.job_class: is required for "
              "delivery_method que");
  r = load(head +
           "    delivery_method: que\n    delivery_options:\n      job_class: J\n"
           "      priority: 99999\n");
  EXPECT_DIAG(r, "config.yml:8: mailbox alice@example.com/inbox: delivery_options.priority:");
  // A secret is never printed, even in a diagnostic about it.
  r = load(head +
           "    delivery_method: que\n    delivery_options:\n      job_class: J\n"
           "      password: [not, a, string]\n");
  EXPECT_EQ(r.error_count(), 1u) << test::dump(r);

  r = load(head + "    delivery_method: letter_opener\n    location: /tmp/letters\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.diagnostics.empty()) << test::dump(r);
  EXPECT_EQ(r.cfg->mailboxes[0].letter_opener.location, "/tmp/letters");
  r = load(head +
           "    delivery_method: letter_opener\n    delivery_options:\n"
           "      location: /tmp/other\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_EQ(r.cfg->mailboxes[0].letter_opener.location, "/tmp/other");
  r = load(head + "    delivery_method: letter_opener\n");
  EXPECT_DIAG(r,
              "mailbox alice@example.com/inbox: location: is required for delivery_method "
              "letter_opener");
  r = load(head + "    delivery_method: noop\n    location: /tmp/letters\n");
  EXPECT_DIAG(r, "location: is only used by delivery_method letter_opener (ignored)");
}

TEST(load, missing_worker) {
  auto r = load(head +
                "    delivery_method: sidekiq\n"
                "    delivery_options:\n"
                "      redis_url: redis://localhost:6379\n");
  ASSERT_EQ(r.error_count(), 1u) << test::dump(r);
  EXPECT_EQ(r.diagnostics[0].to_string(),
            "config.yml:6: mailbox alice@example.com/inbox: delivery_options.worker: is required "
            "for delivery_method sidekiq (the job class, e.g. EmailReceiverWorker)");

  r = load(head + "    delivery_method: sidekiq\n");
  EXPECT_DIAG(r,
              "config.yml:2: mailbox alice@example.com/inbox: delivery_options.worker: is "
              "required");
}

const std::string postback =
    head +
    "    delivery_method: postback\n"  // 5
    "    delivery_options:\n"          // 6
    "      delivery_url: "
    "https://gitlab.example.com/api/v4/internal/mail_room/incoming_email\n";
// next line: 8

TEST(load, jwt_header_without_secret_path_and_the_reverse) {
  auto r = load(postback + "      jwt_auth_header: Gitlab-Mailroom-Api-Request\n");
  ASSERT_EQ(r.diagnostics.size(), 1u) << test::dump(r);
  EXPECT_EQ(r.diagnostics[0].to_string(),
            "config.yml:8: mailbox alice@example.com/inbox: delivery_options.jwt_secret_path: is "
            "required when jwt_auth_header is set");

  temp_file secret_file("aGVsbG93b3JsZA==\n");
  r = load(postback + "      jwt_secret_path: " + secret_file.path() + "\n");
  EXPECT_DIAG(r,
              "config.yml:8: mailbox alice@example.com/inbox: delivery_options.jwt_auth_header: "
              "is required when jwt_secret_path is set");
}

std::string with_jwt(const std::string& path, const std::string& issuer = "mailroom") {
  return postback +
         "      jwt_auth_header: Mailroom-Api-Request\n"
         "      jwt_issuer: " +
         issuer +
         "\n"
         "      jwt_secret_path: " +
         path + "\n";  // line 10
}

TEST(load, jwt_secret_file_is_checked_without_printing_it) {
  temp_file good("aGVsbG93b3JsZA==\n");  // mail_room's spec fixture: base64 "helloworld"
  auto r = load(with_jwt(good.path()));
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.diagnostics.empty()) << test::dump(r);
  const auto& pb = r.cfg->mailboxes[0].postback;
  EXPECT_TRUE(pb.jwt_enabled());
  EXPECT_EQ(pb.jwt_secret_path, good.path());
  EXPECT_EQ(pb.jwt_issuer, "mailroom");
  EXPECT_EQ(pb.jwt_algorithm, "HS256");

  r = load(with_jwt("/nonexistent/mailroom/jwt_secret"));
  EXPECT_DIAG(r,
              "config.yml:10: mailbox alice@example.com/inbox: delivery_options.jwt_secret_path: "
              "file `/nonexistent/mailroom/jwt_secret` does not exist");

  temp_file bad("not base64 !!!\n");
  r = load(with_jwt(bad.path()));
  EXPECT_DIAG(r,
              "config.yml:10: mailbox alice@example.com/inbox: delivery_options.jwt_secret_path: "
              "`" +
                  bad.path() + "` does not hold strict base64");
  EXPECT_EQ(test::find_diag(r, "not base64"), nullptr) << test::dump(r);

  temp_file two_lines("aGVs\nbG93b3JsZA==\n");
  r = load(with_jwt(two_lines.path()));
  EXPECT_DIAG(r, "does not hold strict base64");

  temp_file empty("\n");
  r = load(with_jwt(empty.path()));
  EXPECT_DIAG(r, "delivery_options.jwt_secret_path: `" + empty.path() + "` holds an empty key");

  r = load(with_jwt(good.dir()));
  EXPECT_DIAG(r, "is not a regular file");
}

TEST(load, jwt_secret_file_permissions_and_gitlab_key_size) {
  using std::filesystem::perms;
  temp_file shared("aGVsbG93b3JsZA==\n",
                   perms::owner_read | perms::owner_write | perms::group_read | perms::others_read);
  auto r = load(with_jwt(shared.path(), "gitlab-mailroom"));
  EXPECT_TRUE(r.ok()) << test::dump(r);
  EXPECT_DIAG(r,
              "config.yml:10: warning: mailbox alice@example.com/inbox: "
              "delivery_options.jwt_secret_path: `" +
                  shared.path() +
                  "` is readable by group or others (mode 0644); restrict it to the service "
                  "user (chmod 600)");
  EXPECT_DIAG(r, "decodes to 10 bytes, but GitLab expects a 32-byte key");

  // 32 bytes, as GitLab generates it; relative to the config file's directory.
  temp_file key("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
  r = load(with_jwt(key.name(), "gitlab-mailroom"), test::no_env(), key.dir());
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.diagnostics.empty()) << test::dump(r);
  EXPECT_EQ(r.cfg->mailboxes[0].postback.jwt_secret_path, key.path());
}

TEST(load, jwt_algorithm_other_than_hs256) {
  temp_file good("aGVsbG93b3JsZA==");
  auto r = load(with_jwt(good.path()) + "      jwt_algorithm: RS256\n");
  EXPECT_DIAG(r,
              "config.yml:11: mailbox alice@example.com/inbox: delivery_options.jwt_algorithm: "
              "unsupported algorithm `RS256`: only HS256 is supported");
}

TEST(load, postback_options_and_legacy_precedence) {
  auto r = load(head +
                "    delivery_url: https://top.example.com/inbox\n"  // 5
                "    delivery_token: toptoken\n"                     // 6
                "    content_type: text/plain\n"                     // 7
                "    delivery_options:\n"                            // 8
                "      url: https://options.example.com/inbox\n"     // 9
                "      token: optionstoken\n"                        // 10
                "      open_timeout: 2.5\n"
                "      read_timeout: 30\n"
                "      ssl: {verify_mode: none}\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  const auto& mb = r.cfg->mailboxes[0];
  EXPECT_EQ(mb.delivery, delivery_method::postback);  // mail_room's default
  EXPECT_EQ(mb.postback.url, "https://top.example.com/inbox");
  EXPECT_EQ(mb.postback.token.reveal(), "toptoken");
  EXPECT_EQ(mb.postback.content_type, "text/plain");  // top-level fallback (ours)
  EXPECT_EQ(mb.postback.connect_timeout, std::chrono::milliseconds(2500));
  EXPECT_EQ(mb.postback.response_timeout, std::chrono::seconds(30));
  EXPECT_FALSE(mb.postback.tls.verify_peer);
  EXPECT_DIAG(r,
              "config.yml:9: warning: mailbox alice@example.com/inbox: delivery_options.url: "
              "the mailbox's top-level delivery_url takes precedence (ignored)");
  EXPECT_DIAG(r,
              "config.yml:10: warning: mailbox alice@example.com/inbox: delivery_options.token: "
              "the mailbox's top-level delivery_token takes precedence (ignored)");

  r = load(head +
           "    delivery_options:\n"
           "      delivery_url: http://localhost/inbox\n"
           "      delivery_username: user1\n"
           "      delivery_password: password123abc\n"
           "      content_type: text/plain\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_EQ(r.cfg->mailboxes[0].postback.username, "user1");
  EXPECT_EQ(r.cfg->mailboxes[0].postback.password.reveal(), "password123abc");

  r = load(head + "    delivery_method: postback\n");
  EXPECT_DIAG(r,
              "config.yml:2: mailbox alice@example.com/inbox: delivery_options.delivery_url: is "
              "required for delivery_method postback");
  r = load(head + "    delivery_options: {delivery_url: ftp://example.com/x}\n");
  EXPECT_DIAG(r,
              "config.yml:5: mailbox alice@example.com/inbox: delivery_options.delivery_url: "
              "must be an http:// or https:// URL with a host");
}

TEST(load, logger_delivery_and_structured_log) {
  auto r = load(head +
                "    delivery_method: logger\n"
                "    log_path: /var/log/mail.log\n"
                "    logger:\n"
                "      log_path: STDOUT\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_EQ(r.cfg->mailboxes[0].logger_delivery.log_path, "/var/log/mail.log");
  EXPECT_EQ(r.cfg->mailboxes[0].log.where, log_destination::kind::stdout_);

  r = load(head + "    delivery_method: logger\n    delivery_options: {log_path: /x}\n" +
           "    :logger: {:log_path: :stderr}\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_EQ(r.cfg->mailboxes[0].logger_delivery.log_path, "/x");
  EXPECT_EQ(r.cfg->mailboxes[0].log.where, log_destination::kind::stderr_);

  for (const char* empty : {"''", "~"}) {
    r = load(noop + "    logger: {log_path: " + empty + "}\n");
    ASSERT_TRUE(r.ok()) << test::dump(r);
    EXPECT_EQ(r.cfg->mailboxes[0].log.where, log_destination::kind::discard);
  }
  r = load(noop + "    logger: {log_path: /dev/stdout}\n");
  EXPECT_EQ(r.cfg->mailboxes[0].log.where, log_destination::kind::file);
  EXPECT_EQ(r.cfg->mailboxes[0].log.path, "/dev/stdout");

  r = load(noop + "    logger: /var/log/x.log\n");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: logger: must be a mapping like "
              "{log_path: /var/log/mailroom.log} (got a string)");
}

TEST(load, symbol_and_plain_keys_at_every_level) {
  auto r = load(
      ":mailboxes:\n"
      "  - :email: alice@example.com\n"
      "    password: pw\n"
      "    :name: inbox\n"
      "    :ssl: {:verify_mode: :none}\n"
      "    delivery_method: sidekiq\n"
      "    :delivery_options:\n"
      "      :redis_url: redis://mymaster\n"
      "      worker: EmailReceiverWorker\n"
      "      :sentinels: [{:host: s1, port: 1}]\n"
      "    :arbitration_method: redis\n"
      "    arbitration_options:\n"
      "      :namespace: mail_room:gitlab\n"
      "    logger:\n"
      "      :log_path: /tmp/x.log\n"
      "health_check:\n"
      "  :address: 0.0.0.0\n"
      "  port: 8080\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  // The only diagnostic: turning verification off is always pointed out.
  ASSERT_EQ(r.diagnostics.size(), 1u) << test::dump(r);
  EXPECT_EQ(r.diagnostics[0].key, "ssl.verify_mode");
  const auto& mb = r.cfg->mailboxes[0];
  EXPECT_EQ(mb.config_label(), "alice@example.com/inbox");
  EXPECT_FALSE(mb.ssl.verify_peer);
  EXPECT_EQ(mb.sidekiq.redis.sentinels.at(0).host, "s1");
  EXPECT_EQ(mb.arbitration, arbitration_method::redis);
  EXPECT_EQ(mb.arbitration_opts.redis.namespace_prefix, "mail_room:gitlab");
  EXPECT_EQ(mb.log.path, "/tmp/x.log");
  EXPECT_TRUE(r.cfg->health.enabled);
  EXPECT_EQ(r.cfg->health.address, "0.0.0.0");
  EXPECT_EQ(r.cfg->health.port, 8080);
}

TEST(load, both_spellings_of_one_key) {
  auto r = load(noop + "    :email: bob@example.com\n");
  EXPECT_FALSE(r.ok());
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: email: both `email` (line 2) and "
              "`:email` are given: write the key once");

  r = load(noop + "    delivery_options:\n      worker: A\n      worker: B\n");
  EXPECT_DIAG(r,
              "config.yml:8: mailbox alice@example.com/inbox: delivery_options.worker: "
              "duplicate key `worker` (first at line 7)");
}

TEST(load, unknown_keys_are_warnings) {
  auto r = load(noop + "    serch_command: ALL\n    delivery_options: {foo: 1}\n" +
                "frobnicate: true\n");
  EXPECT_TRUE(r.ok()) << test::dump(r);
  EXPECT_DIAG(r,
              "config.yml:6: warning: mailbox alice@example.com/inbox: unknown key "
              "`serch_command` (ignored); did you mean `search_command`?");
  EXPECT_DIAG(r,
              "config.yml:7: warning: mailbox alice@example.com/inbox: delivery_options: "
              "unknown key `foo` (ignored)");
  EXPECT_DIAG(r, "config.yml:8: warning: unknown key `frobnicate` (ignored)");

  r = load(head + "    delivery_method: noop\n    delivery_options: {worker: W}\n");
  EXPECT_DIAG(r,
              "config.yml:6: warning: mailbox alice@example.com/inbox: "
              "delivery_options.worker: is not used by delivery_method noop (ignored)");
}

TEST(load, yaml_syntax_error_names_the_line) {
  auto r = load(
      "mailboxes:\n"
      "  - email: alice@example.com\n"
      "    password: pw: x\n"
      "    name: inbox\n");
  ASSERT_EQ(r.diagnostics.size(), 1u) << test::dump(r);
  EXPECT_EQ(r.diagnostics[0].to_string(), "config.yml:3: YAML syntax error: illegal map value");

  // ERB that removes lines does not shift the reported line.
  r = load(
      "<%# two\n"
      "    lines %>\n"
      "mailboxes:\n"
      "  - email: a\n"
      "    name: x: y\n");
  ASSERT_EQ(r.diagnostics.size(), 1u) << test::dump(r);
  EXPECT_EQ(r.diagnostics[0].where.line, 5) << test::dump(r);
}

TEST(load, top_level_shape) {
  auto r = load("");
  EXPECT_DIAG(r, "config.yml: mailboxes: no mailboxes configured");
  r = load("health_check: {port: 8080}\n");
  EXPECT_DIAG(r, "config.yml:1: mailboxes: no mailboxes configured");
  r = load("mailboxes: []\n");
  EXPECT_TRUE(r.ok());
  ASSERT_TRUE(r.cfg);
  EXPECT_TRUE(r.cfg->mailboxes.empty());
  EXPECT_DIAG(r, "config.yml:1: warning: mailboxes: the list is empty: there is nothing to watch");
  r = load("- a\n- b\n");
  EXPECT_DIAG(r, "config.yml:1: the top level must be a mapping with a `mailboxes:` list");
  r = load("mailboxes:\n  - just a string\n");
  EXPECT_DIAG(r, "config.yml:2: mailbox mailboxes[0]: each mailbox must be a mapping");
}

TEST(load, health_check) {
  auto r = load(noop + "health_check:\n  address: 0.0.0.0\n  port: 8080\n  type: http\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.cfg->health.enabled);
  EXPECT_EQ(r.cfg->health.port, 8080);

  r = load(noop + "health_check:\n  port: 8080\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_EQ(r.cfg->health.address, "127.0.0.1");

  r = load(noop + "health_check:\n  address: 0.0.0.0\n");
  EXPECT_DIAG(r, "config.yml:6: health_check.port: is required when health_check is present");
  r = load(noop + "health_check:\n  port: 99999\n");
  EXPECT_DIAG(r, "config.yml:7: health_check.port: must be between 1 and 65535 (got 99999)");
  r = load(noop + "health_check:\n  port: 8080\n  type: tcp\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_FALSE(r.cfg->health.enabled);
  EXPECT_DIAG(r,
              "config.yml:8: warning: health_check.type: unsupported type `tcp`: only http is "
              "supported; health check disabled");
}

TEST(load, cluster) {
  auto r =
      load(noop + ":cluster:\n  :redis_url: redis://:s3cret@10.0.0.5:6380/2\n  :lease_ttl: 15\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.cfg->cluster.enabled);
  EXPECT_EQ(r.cfg->cluster.redis.host, "10.0.0.5");
  EXPECT_EQ(r.cfg->cluster.redis.port, 6380);
  EXPECT_EQ(r.cfg->cluster.redis.db, 2);
  EXPECT_EQ(r.cfg->cluster.redis.namespace_prefix, "mailroom");
  EXPECT_EQ(r.cfg->cluster.lease_ttl, std::chrono::seconds(15));

  r = load(noop);
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_FALSE(r.cfg->cluster.enabled);

  r = load(noop + "cluster:\n  redis_url: redis://localhost\n  namespace: helpdesk\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_EQ(r.cfg->cluster.redis.namespace_prefix, "helpdesk");
  EXPECT_EQ(r.cfg->cluster.lease_ttl, std::chrono::seconds(10));

  r = load(noop + "cluster:\n  lease_ttl: 10\n");
  EXPECT_DIAG(r,
              "config.yml:6: cluster.redis_url: is required: the Redis where the instances keep "
              "their mailbox leases");
  r = load(noop + "cluster:\n  redis_url: redis://localhost\n  lease_ttl: 1\n");
  EXPECT_DIAG(r, "config.yml:8: cluster.lease_ttl: must be between 3 and 300 (got 1)");
  r = load(noop + "cluster: yes\n");
  EXPECT_DIAG(r,
              "config.yml:6: cluster: must be a mapping like {redis_url: redis://redis:6379, "
              "lease_ttl: 10} (got a boolean)");
  r = load(noop + "cluster:\n  redis_url: redis://localhost\n  leases: 3\n");
  EXPECT_DIAG(r, "config.yml:8: warning: cluster: unknown key `leases` (ignored)");
  // The password in the URL is never printed.
  r = load(noop + "cluster:\n  redis_url: redis://:s3cret@localhost:99999\n");
  EXPECT_EQ(test::dump(r).find("s3cret"), std::string::npos) << test::dump(r);
}

TEST(load, inbox_method) {
  auto r = load(noop + "    inbox_method: imap\n    inbox_options: {tenant_id: t}\n");
  EXPECT_TRUE(r.ok());
  EXPECT_DIAG(r,
              "config.yml:7: warning: mailbox alice@example.com/inbox: inbox_options: is only "
              "used by Microsoft Graph inboxes (ignored)");
  r = load(noop + "    inbox_method: pop3\n");
  EXPECT_TRUE(r.ok());
  EXPECT_DIAG(r,
              "config.yml:6: warning: mailbox alice@example.com/inbox: inbox_method: unknown "
              "inbox_method `pop3`: using IMAP, as mail_room does");
}

// GitLab's template for a Graph inbox, IMAP keys included (read and ignored).
const std::string graph_head =
    "mailboxes:\n"
    "  - :email: incoming@example.onmicrosoft.com\n"
    "    :name: inbox\n"
    "    :host: outlook.office365.com\n"
    "    :port: 993\n"
    "    :ssl: false\n"
    "    :delivery_method: noop\n"
    "    :inbox_method: microsoft_graph\n";  // next line: 9

TEST(load, graph_inbox_with_mail_rooms_keys) {
  auto r = load(graph_head +
                "    :inbox_options:\n"
                "      :tenant_id: tenant-1\n"
                "      :client_id: client-1\n"
                "      :client_secret: s3cr3t-value\n"
                "      :poll_interval: 5\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.diagnostics.empty()) << test::dump(r);
  const auto& mb = r.cfg->mailboxes[0];
  EXPECT_TRUE(mb.is_graph());
  EXPECT_EQ(mb.graph.tenant_id, "tenant-1");
  EXPECT_EQ(mb.graph.client_id, "client-1");
  EXPECT_EQ(mb.graph.client_secret.reveal(), "s3cr3t-value");
  EXPECT_EQ(mb.graph.poll_interval, std::chrono::seconds(5));
  EXPECT_EQ(mb.graph.graph_endpoint, "https://graph.microsoft.com");
  EXPECT_EQ(mb.oauth2.token_url, "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token");
  EXPECT_EQ(mb.oauth2.scope, "https://graph.microsoft.com/.default");
  EXPECT_TRUE(mb.oauth2.client_credentials());
  EXPECT_EQ(mb.label(), "incoming@example.onmicrosoft.com/inbox@graph.microsoft.com:443");
}

TEST(load, graph_endpoints) {
  auto r = load(graph_head +
                "    :inbox_options:\n"
                "      :tenant_id: t\n"
                "      :client_id: c\n"
                "      :client_secret: s\n"
                "      :azure_ad_endpoint: http://127.0.0.1:8080/\n"
                "      :graph_endpoint: http://LOCALHOST:9090//\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  const auto& mb = r.cfg->mailboxes[0];
  EXPECT_EQ(mb.oauth2.token_url, "http://127.0.0.1:8080/t/oauth2/v2.0/token");
  EXPECT_EQ(mb.oauth2.scope, "http://LOCALHOST:9090/.default");
  EXPECT_EQ(mb.server(), "localhost:9090");

  r = load(graph_head +
           "    :inbox_options:\n"
           "      :tenant_id: t\n"
           "      :client_id: c\n"
           "      :client_secret: s\n"
           "      :graph_endpoint: http://graph.example.com\n"
           "      :azure_ad_endpoint: https://login.example.com/?x=1\n");
  EXPECT_DIAG(r,
              "config.yml:13: mailbox incoming@example.onmicrosoft.com/inbox: "
              "inbox_options.graph_endpoint: http:// is accepted only for a loopback host (got "
              "host graph.example.com): the endpoint receives the access token and the mail; use "
              "https://");
  EXPECT_DIAG(r,
              "config.yml:14: mailbox incoming@example.onmicrosoft.com/inbox: "
              "inbox_options.azure_ad_endpoint: must not have a query or fragment (the calls' "
              "paths are appended to it)");
}

TEST(load, graph_inbox_mistakes) {
  auto r = load(graph_head);
  EXPECT_DIAG(r,
              "config.yml:2: mailbox incoming@example.onmicrosoft.com/inbox: inbox_options: is "
              "required with inbox_method microsoft_graph: a mapping with tenant_id, client_id "
              "and client_secret");

  r = load(graph_head +
           "    :inbox_options:\n      :tenant_id: t\n      :poll_interval: 0\n"
           "      :client_secret: \"\"\n      :tenant: x\n");
  EXPECT_DIAG(r,
              "config.yml:9: mailbox incoming@example.onmicrosoft.com/inbox: "
              "inbox_options.client_id: is required with inbox_method microsoft_graph (the app "
              "registration's application (client) ID)");
  EXPECT_DIAG(r,
              "config.yml:12: mailbox incoming@example.onmicrosoft.com/inbox: "
              "inbox_options.client_secret: is required with inbox_method microsoft_graph (the "
              "app registration's client secret)");
  EXPECT_DIAG(r,
              "config.yml:11: warning: mailbox incoming@example.onmicrosoft.com/inbox: "
              "inbox_options.poll_interval: must be a positive number of seconds (got 0): using "
              "60, as mail_room does");
  EXPECT_DIAG(r,
              "config.yml:13: warning: mailbox incoming@example.onmicrosoft.com/inbox: "
              "inbox_options: unknown key `:tenant` (ignored)");
  EXPECT_FALSE(r.ok());

  r = load(graph_head +
           "    :inbox_options: {tenant_id: t, client_id: c, client_secret: s}\n"
           "    :auth_method: xoauth2\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_DIAG(r,
              "config.yml:10: warning: mailbox incoming@example.onmicrosoft.com/inbox: "
              "auth_method: only used by IMAP inboxes (ignored)");
}

TEST(load, after_delivery) {
  auto r = load(noop);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.cfg->mailboxes[0].after_delivery, after_delivery_action::seen);

  r = load(noop + "    delete_after_delivery: true\n");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.cfg->mailboxes[0].after_delivery, after_delivery_action::remove);

  r = load(noop + "    after_delivery: delete\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_EQ(r.cfg->mailboxes[0].after_delivery, after_delivery_action::remove);

  r = load(noop + "    after_delivery: :move\n    move_to: Processed\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.diagnostics.empty()) << test::dump(r);
  EXPECT_EQ(r.cfg->mailboxes[0].after_delivery, after_delivery_action::move);
  EXPECT_EQ(r.cfg->mailboxes[0].move_to, "Processed");
}

TEST(load, after_delivery_mistakes) {
  auto r = load(noop + "    after_delivery: move\n");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: move_to: is required with "
              "after_delivery: move");
  r = load(noop + "    after_delivery: archive\n");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/inbox: after_delivery: unknown value "
              "`archive`: expected seen, delete or move");
  r = load(noop + "    delete_after_delivery: true\n    after_delivery: move\n    move_to: P\n");
  EXPECT_DIAG(r,
              "config.yml:7: mailbox alice@example.com/inbox: after_delivery: contradicts "
              "delete_after_delivery: true (which means after_delivery: delete); remove one of "
              "them");
  r = load(noop + "    after_delivery: move\n    move_to: INBOX\n");
  EXPECT_DIAG(r,
              "config.yml:7: mailbox alice@example.com/inbox: move_to: must not be the watched "
              "folder itself (name)");
  r = load(noop + "    move_to: Processed\n");
  EXPECT_TRUE(r.ok());
  EXPECT_DIAG(r,
              "config.yml:6: warning: mailbox alice@example.com/inbox: move_to: is only used with "
              "after_delivery: move (ignored)");
}

TEST(load, arbitration_options) {
  auto r = load(noop +
                "    arbitration_method: redis\n"
                "    arbitration_options:\n"
                "      redis_url: redis://redis.example.com:6379/1\n"
                "      namespace: mail_room:gitlab\n"
                "      key_format: mail_room\n"
                "      expiration: 900\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  const auto& a = r.cfg->mailboxes[0].arbitration_opts;
  EXPECT_EQ(a.redis.host, "redis.example.com");
  EXPECT_EQ(a.redis.db, 1);
  EXPECT_EQ(a.key_format, arbitration_key_format::mail_room);
  EXPECT_EQ(a.expiration, std::chrono::seconds(900));
  EXPECT_EQ(a.redis.key("delivered:1"), "mail_room:gitlab:delivered:1");

  r = load(noop + "    arbitration_method: redis\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_EQ(r.cfg->mailboxes[0].arbitration_opts.key_format, arbitration_key_format::scoped);
  EXPECT_EQ(r.cfg->mailboxes[0].arbitration_opts.expiration, std::chrono::seconds(600));
  EXPECT_EQ(r.cfg->mailboxes[0].arbitration_opts.redis.url, "redis://localhost:6379");

  r = load(noop +
           "    arbitration_method: redis\n"
           "    arbitration_options:\n"
           "      redis_db: 3\n"
           "      key_format: global\n");
  EXPECT_DIAG(r,
              "config.yml:8: warning: mailbox alice@example.com/inbox: "
              "arbitration_options.redis_db: arbitration takes the database from redis_url's "
              "path");
  EXPECT_DIAG(r,
              "config.yml:9: mailbox alice@example.com/inbox: arbitration_options.key_format: "
              "unknown key_format `global`: expected scoped or mail_room");
}

TEST(load, every_problem_is_reported_not_just_the_first) {
  auto r = load(
      "mailboxes:\n"
      "  - email: a@example.com\n"
      "    name: inbox\n"
      "    port: 0\n"
      "    idle_timeout: 9999\n"
      "    delivery_method: sidekiq\n"
      "  - email: b@example.com\n"
      "    password: pw\n"
      "    name: inbox\n"
      "    delivery_method: que\n");
  EXPECT_DIAG(r, "config.yml:2: mailbox a@example.com/inbox: password: is required");
  EXPECT_DIAG(r, "config.yml:4: mailbox a@example.com/inbox: port:");
  EXPECT_DIAG(r, "config.yml:5: mailbox a@example.com/inbox: idle_timeout:");
  EXPECT_DIAG(r, "mailbox a@example.com/inbox: delivery_options.worker: is required");
  EXPECT_DIAG(r,
              "config.yml:7: mailbox b@example.com/inbox: delivery_options.job_class: is "
              "required");
  EXPECT_EQ(r.error_count(), 5u) << test::dump(r);
}

TEST(load, erb_values_flow_into_the_model) {
  temp_file pw("  file-password\n");
  auto r = load(
      "mailboxes:\n"
      "  - email: <%= ENV['MAIL_USER'] %>\n"
      "    password: <%= File.read('" +
          pw.name() +
          "').strip.to_json %>\n"
          "    name: <%= ENV.fetch('MAIL_FOLDER', 'inbox') %>\n"
          "    port: <%= ENV['IMAP_PORT'].to_i %>\n"
          "    delivery_method: noop\n",
      env_of({{"MAIL_USER", "alice@example.com"}, {"IMAP_PORT", "143"}}), pw.dir());
  ASSERT_TRUE(r.ok()) << test::dump(r);
  const auto& mb = r.cfg->mailboxes[0];
  EXPECT_EQ(mb.email, "alice@example.com");
  EXPECT_EQ(mb.password.reveal(), "file-password");
  EXPECT_EQ(mb.name, "inbox");
  EXPECT_EQ(mb.port, 143);
}

TEST(load, erb_errors_stop_before_yaml) {
  auto r = load("mailboxes: <%= ENV.fetch('NOPE') %>\n<%= Rails.env %>\n");
  ASSERT_EQ(r.diagnostics.size(), 2u) << test::dump(r);
  EXPECT_DIAG(r, "config.yml:1: ENV.fetch(\"NOPE\"): environment variable NOPE is not set");
  EXPECT_DIAG(
      r,
      "config.yml:2: unsupported ERB expression `Rails.env`: mailroom evaluates only "
      "ENV[...], ENV.fetch(...) and File.read(...) with .strip/.chomp/.to_json/.dump and "
      "[a..b], optionally inside ERB::Util.url_encode(...); render a template that needs Ruby "
      "(GitLab Omnibus's config/mail_room.yml) to plain "
      "YAML first, see README, 'Rendering GitLab's ERB config'");
}

TEST(load, erb_values_are_never_echoed) {
  auto r = load(noop + "    idle_timeout: <%= ENV['T'] %>\n    port: <%= ENV['P'] %>\n",
                env_of({{"T", "99999"}, {"P", "hunter2"}}));
  EXPECT_DIAG(r, "idle_timeout: must be at most 1740 (got (a value from ERB, not shown))");
  EXPECT_DIAG(r, "port: must be an integer (got a string)");
  for (const auto& line : test::lines_of(r)) {
    EXPECT_EQ(line.find("99999"), std::string::npos) << line;
    EXPECT_EQ(line.find("hunter2"), std::string::npos) << line;
  }
}

TEST(load, same_folder_on_the_same_server_twice_is_an_error) {
  // The default host and port (imap.gmail.com:993) on both; "INBOX" in any
  // case is the same folder (RFC 3501 §5.1).
  auto r = load(noop +
                "  - email: alice@example.com\n    password: pw\n    name: INBOX\n"
                "    delivery_method: noop\n");
  EXPECT_FALSE(r.ok());
  EXPECT_DIAG(r,
              "config.yml:6: mailbox alice@example.com/INBOX: the same folder on "
              "imap.gmail.com:993 is already configured at line 2; each mailbox (email, name, "
              "host, port) may appear once");
  r = load(noop +
           "  - email: alice@example.com\n    password: pw\n    name: inbox\n"
           "    host: IMAP.Gmail.com\n    delivery_method: noop\n");
  EXPECT_FALSE(r.ok());
}

TEST(load, same_folder_on_two_servers_is_two_mailboxes) {
  auto r = load(noop +
                "  - email: alice@example.com\n    password: pw\n    name: inbox\n"
                "    host: imap.example.com\n    delivery_method: noop\n"
                "  - email: alice@example.com\n    password: pw\n    name: inbox\n"
                "    port: 994\n    delivery_method: noop\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  ASSERT_EQ(r.cfg->mailboxes.size(), 3u);
  EXPECT_EQ(r.cfg->mailboxes[0].label(), "alice@example.com/inbox@imap.gmail.com:993");
  EXPECT_EQ(r.cfg->mailboxes[1].label(), "alice@example.com/inbox@imap.example.com:993");
  EXPECT_EQ(r.cfg->mailboxes[2].label(), "alice@example.com/inbox@imap.gmail.com:994");
}

TEST(load, load_file_resolves_relative_paths_from_its_directory) {
  temp_file pw("from-file\n");
  temp_file cfg(head + "    delivery_method: noop\n    search_command: <%= File.read('" +
                pw.name() + "').chomp.to_json %>\n");
  auto r = load_file(cfg.path(), test::no_env());
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_EQ(r.cfg->path, cfg.path());
  EXPECT_EQ(r.cfg->mailboxes[0].search_command, "from-file");

  r = load_file("/nonexistent/mailroom.yml");
  ASSERT_EQ(r.diagnostics.size(), 1u);
  EXPECT_EQ(r.diagnostics[0].to_string(),
            "/nonexistent/mailroom.yml: cannot read the configuration: No such file or directory");
}

TEST(load, deep_nesting_is_rejected_cheaply) {
  std::string deep = "a: " + std::string(10000, '[') + std::string(10000, ']') + "\n";
  auto r = load(deep);
  EXPECT_DIAG(r, "config.yml:1: YAML nesting deeper than 64 levels is not supported");
}

}  // namespace
}  // namespace mailroom::config
