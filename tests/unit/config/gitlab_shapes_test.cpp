// The configurations that exist in the wild: what GitLab's Rails template
// renders, what the Helm chart generates (with its ERB), mail_room's own spec
// fixture and README examples. All must load cleanly.
#include "config/load.hpp"

#include "config_test_util.hpp"

#include <gtest/gtest.h>

namespace mailroom::config {
namespace {

using test::env_of;
using test::load;
using test::temp_file;

constexpr const char* gitlab_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n";  // 32 bytes

// config/mail_room.yml as rendered for Omnibus with the webhook delivery
// (the default since GitLab 15.3) and Redis arbitration.
std::string rails_webhook(const std::string& secret_path) {
  return ":mailboxes:\n"
         "  \n"
         "  -\n"
         "    :host: \"imap.example.com\"\n"
         "    :port: 993\n"
         "    :ssl: true\n"
         "    :start_tls: false\n"
         "    :email: \"incoming@example.com\"\n"
         "    :password: \"imap-password\"\n"
         "    :idle_timeout: 60\n"
         "    :logger:\n"
         "      :log_path: \"/var/log/gitlab/mailroom/mail_room_json.log\"\n"
         "    :name: \"inbox\"\n"
         "    :delete_after_delivery: true\n"
         "    :expunge_deleted: false\n"
         "    \n"
         "    :delivery_method: postback\n"
         "    :delivery_options:\n"
         "      :delivery_url: "
         "\"https://gitlab.example.com/api/v4/internal/mail_room/incoming_email\"\n"
         "      :content_type: \"text/plain\"\n"
         "      :jwt_auth_header: \"Gitlab-Mailroom-Api-Request\"\n"
         "      :jwt_issuer: \"gitlab-mailroom\"\n"
         "      :jwt_algorithm: \"HS256\"\n"
         "      :jwt_secret_path: \"" +
         secret_path +
         "\"\n"
         "    :arbitration_method: redis\n"
         "    :arbitration_options:\n"
         "      :redis_url: \"unix:/var/opt/gitlab/redis/redis.socket\"\n"
         "      :namespace: mail_room:gitlab\n";
}

TEST(gitlab_shapes, rails_template_webhook) {
  temp_file secret(gitlab_key);
  // Omnibus points Redis at a unix socket, which mailroom cannot use yet.
  auto r = load(rails_webhook(secret.path()));
  EXPECT_DIAG(r, "arbitration_options.redis_url: unix sockets are not supported");

  std::string text = rails_webhook(secret.path());
  auto pos = text.find("unix:/var/opt/gitlab/redis/redis.socket");
  text.replace(pos, std::string("unix:/var/opt/gitlab/redis/redis.socket").size(),
               "redis://:redispw@127.0.0.1:6379/0");
  r = load(text);
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.diagnostics.empty()) << test::dump(r);
  ASSERT_EQ(r.cfg->mailboxes.size(), 1u);
  const auto& mb = r.cfg->mailboxes[0];
  EXPECT_EQ(mb.host, "imap.example.com");
  EXPECT_EQ(mb.port, 993);
  EXPECT_TRUE(mb.ssl.enabled);
  EXPECT_EQ(mb.email, "incoming@example.com");
  EXPECT_EQ(mb.password.reveal(), "imap-password");
  EXPECT_EQ(mb.idle_timeout, std::chrono::seconds(60));
  EXPECT_EQ(mb.log.where, log_destination::kind::file);
  EXPECT_EQ(mb.log.path, "/var/log/gitlab/mailroom/mail_room_json.log");
  EXPECT_EQ(mb.after_delivery, after_delivery_action::remove);
  EXPECT_FALSE(mb.expunge_deleted);
  EXPECT_EQ(mb.delivery, delivery_method::postback);
  EXPECT_EQ(mb.postback.url, "https://gitlab.example.com/api/v4/internal/mail_room/incoming_email");
  EXPECT_EQ(mb.postback.content_type, "text/plain");
  EXPECT_EQ(mb.postback.jwt_auth_header, "Gitlab-Mailroom-Api-Request");
  EXPECT_EQ(mb.postback.jwt_issuer, "gitlab-mailroom");
  EXPECT_TRUE(mb.postback.jwt_enabled());
  EXPECT_TRUE(mb.postback.token.empty());
  EXPECT_EQ(mb.arbitration, arbitration_method::redis);
  EXPECT_EQ(mb.arbitration_opts.redis.host, "127.0.0.1");
  EXPECT_EQ(mb.arbitration_opts.redis.password.reveal(), "redispw");
  EXPECT_EQ(mb.arbitration_opts.redis.url, "redis://127.0.0.1:6379/0");
  EXPECT_EQ(mb.arbitration_opts.redis.namespace_prefix, "mail_room:gitlab");
}

TEST(gitlab_shapes, rails_template_sidekiq_with_sentinels_and_ssl_params) {
  auto r = load(
      ":mailboxes:\n"
      "  -\n"
      "    :host: \"imap.gmail.com\"\n"
      "    :port: 143\n"
      "    :ssl: false\n"
      "    :start_tls: true\n"
      "    :email: \"gitlab-incoming@gmail.com\"\n"
      "    :password: \"p\\\"w\"\n"
      "    :idle_timeout: 60\n"
      "    :logger:\n"
      "      :log_path: \"/home/git/gitlab/log/mail_room_json.log\"\n"
      "    :name: \"inbox\"\n"
      "    :delete_after_delivery: true\n"
      "    :expunge_deleted: false\n"
      "    :delivery_method: sidekiq\n"
      "    :delivery_options:\n"
      "      :redis_url: \"rediss://:redispw@gitlab-redis/\"\n"
      "      :redis_ssl_params: {\"ca_file\":\"/etc/gitlab/ssl/redis-ca.pem\",\"verify_mode\":1}\n"
      "      :redis_db: 0\n"
      "      :queue: \"default\"\n"
      "      :worker: \"EmailReceiverWorker\"\n"
      "      :sentinels: "
      "[{\"host\":\"10.0.0.1\",\"port\":26379},{\"host\":\"10.0.0.2\",\"port\":26379}]\n"
      "      :sentinel_password: \"sentinelpw\"\n"
      "    :arbitration_method: redis\n"
      "    :arbitration_options:\n"
      "      :redis_url: \"rediss://:redispw@gitlab-redis/\"\n"
      "      :redis_ssl_params: {\"ca_file\":\"/etc/gitlab/ssl/redis-ca.pem\"}\n"
      "      :namespace: \"mail_room:gitlab\"\n"
      "      :sentinels: [{\"host\":\"10.0.0.1\",\"port\":26379}]\n"
      "      :sentinel_password: \"sentinelpw\"\n"
      "  -\n"
      "    :host: \"imap.gmail.com\"\n"
      "    :port: 143\n"
      "    :ssl: false\n"
      "    :start_tls: true\n"
      "    :email: \"gitlab-desk@gmail.com\"\n"
      "    :password: \"pw2\"\n"
      "    :idle_timeout: 60\n"
      "    :name: \"inbox\"\n"
      "    :delete_after_delivery: true\n"
      "    :expunge_deleted: false\n"
      "    :delivery_method: sidekiq\n"
      "    :delivery_options:\n"
      "      :redis_url: \"redis://localhost:6379\"\n"
      "      :redis_db: 0\n"
      "      :queue: \"default\"\n"
      "      :worker: \"ServiceDeskEmailReceiverWorker\"\n"
      "    :arbitration_method: redis\n"
      "    :arbitration_options:\n"
      "      :redis_url: \"redis://localhost:6379\"\n"
      "      :namespace: \"mail_room:gitlab\"\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.diagnostics.empty()) << test::dump(r);
  ASSERT_EQ(r.cfg->mailboxes.size(), 2u);
  const auto& in = r.cfg->mailboxes[0];
  EXPECT_EQ(in.port, 143);
  EXPECT_FALSE(in.ssl.enabled);
  EXPECT_TRUE(in.start_tls);
  EXPECT_EQ(in.password.reveal(), "p\"w");
  EXPECT_EQ(in.delivery, delivery_method::sidekiq);
  EXPECT_EQ(in.sidekiq.worker, "EmailReceiverWorker");
  EXPECT_EQ(in.sidekiq.queue, "default");
  const auto& redis = in.sidekiq.redis;
  EXPECT_TRUE(redis.tls);
  EXPECT_EQ(redis.host, "gitlab-redis");  // the Sentinel master name
  EXPECT_EQ(redis.password.reveal(), "redispw");
  EXPECT_EQ(redis.tls_settings.ca_file, "/etc/gitlab/ssl/redis-ca.pem");
  EXPECT_TRUE(redis.tls_settings.verify_peer);
  ASSERT_EQ(redis.sentinels.size(), 2u);
  EXPECT_EQ(redis.sentinels[1].host, "10.0.0.2");
  EXPECT_EQ(redis.sentinel_password.reveal(), "sentinelpw");
  EXPECT_EQ(in.arbitration_opts.redis.sentinels.size(), 1u);
  EXPECT_EQ(in.arbitration_opts.redis.tls_settings.ca_file, "/etc/gitlab/ssl/redis-ca.pem");

  const auto& desk = r.cfg->mailboxes[1];
  EXPECT_EQ(desk.config_label(), "gitlab-desk@gmail.com/inbox");
  EXPECT_EQ(desk.sidekiq.worker, "ServiceDeskEmailReceiverWorker");
  EXPECT_EQ(desk.log.where, log_destination::kind::discard);
  EXPECT_FALSE(desk.sidekiq.redis.uses_sentinel());
}

// The Helm chart's ConfigMap: ERB reads the mounted secrets when the file is
// loaded. Paths are temp files here instead of /etc/gitlab/...
TEST(gitlab_shapes, helm_chart_webhook_with_erb_secrets) {
  temp_file imap_password("chart-imap-password\n");
  temp_file redis_password("redis p@ss\n");
  temp_file sentinel_password("sentinel-pw\n");
  temp_file webhook_secret(gitlab_key);
  const std::string text =
      ":health_check:\n"
      "  :address: 0.0.0.0\n"
      "  :port: 8080\n"
      ":mailboxes:\n"
      "  -\n"
      "    :email: myusername\n"
      "    :name: inbox\n"
      "    :delete_after_delivery: true\n"
      "    :expunge_deleted: false\n"
      "    :logger:\n"
      "      :log_path: \"/dev/stdout\"\n"
      "    :inbox_method: imap\n"
      "    :host: example.com\n"
      "    :port: 993\n"
      "    :ssl: true\n"
      "    :start_tls: false\n"
      "    :password: <%= File.read(\"" +
      imap_password.path() +
      "\").strip.to_json %>\n"
      "    :idle_timeout: 60\n"
      "    :delivery_method: postback\n"
      "    :delivery_options:\n"
      "      :delivery_url: "
      "'http://test-webservice-default.default.svc:8181/api/v4/internal/mail_room/"
      "incoming_email'\n"
      "      :content_type: \"text/plain\"\n"
      "      :jwt_auth_header: \"Gitlab-Mailroom-Api-Request\"\n"
      "      :jwt_issuer: \"gitlab-mailroom\"\n"
      "      :jwt_algorithm: \"HS256\"\n"
      "      :jwt_secret_path: \"" +
      webhook_secret.path() +
      "\"\n"
      "    :arbitration_method: redis\n"
      "    :arbitration_options:\n"
      "      :redis_url: redis://:<%= ERB::Util::url_encode(File.read(\"" +
      redis_password.path() +
      "\").strip) %>@gitlab-redis-master.default.svc:6379\n"
      "      :namespace: mail_room:gitlab\n"
      "      sentinels:\n"
      "        - host: sentinel-0.default.svc\n"
      "          port: 26379\n"
      "      :sentinel_password: \"<%= File.read(\"" +
      sentinel_password.path() + "\").strip %>\"\n";
  auto r = load(text);
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.diagnostics.empty()) << test::dump(r);
  EXPECT_TRUE(r.cfg->health.enabled);
  EXPECT_EQ(r.cfg->health.address, "0.0.0.0");
  EXPECT_EQ(r.cfg->health.port, 8080);
  const auto& mb = r.cfg->mailboxes.at(0);
  EXPECT_EQ(mb.config_label(), "myusername/inbox");
  EXPECT_EQ(mb.password.reveal(), "chart-imap-password");
  EXPECT_EQ(mb.log.where, log_destination::kind::file);
  EXPECT_EQ(mb.log.path, "/dev/stdout");
  EXPECT_EQ(mb.postback.url,
            "http://test-webservice-default.default.svc:8181/api/v4/internal/mail_room/"
            "incoming_email");
  const auto& redis = mb.arbitration_opts.redis;
  EXPECT_EQ(redis.password.reveal(), "redis p@ss");
  EXPECT_EQ(redis.host, "gitlab-redis-master.default.svc");
  EXPECT_EQ(redis.url, "redis://gitlab-redis-master.default.svc:6379");
  ASSERT_EQ(redis.sentinels.size(), 1u);
  EXPECT_EQ(redis.sentinel_password.reveal(), "sentinel-pw");
}

TEST(gitlab_shapes, helm_chart_sidekiq) {
  auto r = load(
      ":mailboxes:\n"
      "  -\n"
      "    :email: myusername\n"
      "    :name: inbox\n"
      "    :delete_after_delivery: true\n"
      "    :expunge_deleted: false\n"
      "    :inbox_method: imap\n"
      "    :host: example.com\n"
      "    :port: 993\n"
      "    :ssl: true\n"
      "    :start_tls: false\n"
      "    :password: <%= ENV['IMAP_PASSWORD'].to_json %>\n"
      "    :idle_timeout: 60\n"
      "    :delivery_method: sidekiq\n"
      "    :delivery_options:\n"
      "      :redis_url: redis://test-redis-master.default.svc:6379\n"
      "      :queue: email_receiver\n"
      "      :worker: EmailReceiverWorker\n"
      "    :arbitration_method: redis\n"
      "    :arbitration_options:\n"
      "      :redis_url: redis://test-redis-master.default.svc:6379\n"
      "      :namespace: mail_room:gitlab\n",
      env_of({{"IMAP_PASSWORD", "x\"y"}}));
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.diagnostics.empty()) << test::dump(r);
  const auto& mb = r.cfg->mailboxes.at(0);
  EXPECT_EQ(mb.password.reveal(), "x\"y");
  EXPECT_EQ(mb.sidekiq.queue, "email_receiver");
  EXPECT_EQ(mb.sidekiq.redis.host, "test-redis-master.default.svc");
  EXPECT_EQ(mb.sidekiq.redis.db, 0);
}

// spec/fixtures/test_config.yml of mail_room.
TEST(gitlab_shapes, mail_room_spec_fixture) {
  auto r = load(
      "---\n"
      ":mailboxes:\n"
      "  -\n"
      "    :email: \"user1@gmail.com\"\n"
      "    :password: \"password\"\n"
      "    :name: \"inbox\"\n"
      "    :delivery_url: \"http://localhost:3000/inbox\"\n"
      "    :delivery_token: \"abcdefg\"\n"
      "  -\n"
      "    :email: \"user2@gmail.com\"\n"
      "    :password: \"password\"\n"
      "    :name: \"inbox\"\n"
      "    :delivery_url: \"http://localhost:3000/inbox\"\n"
      "    :delivery_token: \"abcdefg\"\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.diagnostics.empty()) << test::dump(r);
  ASSERT_EQ(r.cfg->mailboxes.size(), 2u);
  for (const auto& mb : r.cfg->mailboxes) {
    EXPECT_EQ(mb.delivery, delivery_method::postback);
    EXPECT_EQ(mb.postback.url, "http://localhost:3000/inbox");
    EXPECT_EQ(mb.postback.token.reveal(), "abcdefg");
    EXPECT_EQ(mb.host, "imap.gmail.com");
    EXPECT_EQ(mb.port, 993);
  }
  EXPECT_EQ(r.cfg->mailboxes[0].where.line, 4);
  EXPECT_EQ(r.cfg->mailboxes[1].config_label(), "user2@gmail.com/inbox");
}

// mail_room's README arbitration example, comments and all.
TEST(gitlab_shapes, mail_room_readme_arbitration_example) {
  auto r = load(
      ":mailboxes:\n"
      "  -\n"
      "    :email: \"user1@gmail.com\"\n"
      "    :password: \"password\"\n"
      "    :name: \"inbox\"\n"
      "    :delivery_method: postback\n"
      "    :delivery_options:\n"
      "      :delivery_url: \"http://localhost:3000/inbox\"\n"
      "      :delivery_token: \"abcdefg\"\n"
      "\n"
      "    :arbitration_method: redis\n"
      "    :arbitration_options:\n"
      "      # The Redis server to connect with. Defaults to redis://localhost:6379.\n"
      "      :redis_url: redis://redis.example.com:6379\n"
      "      # The Redis namespace to house the Redis keys under. Optional.\n"
      "      :namespace: mail_room\n"
      "  -\n"
      "    :email: \"user2@gmail.com\"\n"
      "    :password: \"password\"\n"
      "    :name: \"inbox\"\n"
      "    :delivery_method: postback\n"
      "    :delivery_options:\n"
      "      :delivery_url: \"http://localhost:3000/inbox\"\n"
      "      :delivery_token: \"abcdefg\"\n"
      "\n"
      "    :arbitration_method: redis\n"
      "    :arbitration_options:\n"
      "      # When pointing to sentinel, follow this sintax for redis URLs:\n"
      "      # redis://:<password>@<master-name>/\n"
      "      :redis_url: redis://:password@my-redis-sentinel/\n"
      "      :sentinels:\n"
      "        -\n"
      "          :host: 127.0.0.1\n"
      "          :port: 26379\n"
      "      # The Redis namespace to house the Redis keys under. Optional.\n"
      "      :namespace: mail_room\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.diagnostics.empty()) << test::dump(r);
  const auto& second = r.cfg->mailboxes.at(1).arbitration_opts.redis;
  EXPECT_EQ(second.host, "my-redis-sentinel");
  EXPECT_EQ(second.password.reveal(), "password");
  EXPECT_EQ(second.sentinels.at(0).host, "127.0.0.1");
  EXPECT_EQ(second.sentinels.at(0).port, 26379);
  EXPECT_EQ(second.key("delivered:7"), "mail_room:delivered:7");
}

// The Rails template itself needs Ruby: refused with advice, without a flood.
TEST(gitlab_shapes, rails_erb_template_is_refused_with_advice) {
  auto r = load(
      ":mailboxes:\n"
      "  <%\n"
      "    require_relative \"../lib/gitlab/mail_room\" unless defined?(Gitlab::MailRoom)\n"
      "    Gitlab::MailRoom.enabled_configs.each do |key, config|\n"
      "  %>\n"
      "    -\n"
      "      :host: <%= config[:host].to_json %>\n"
      "      :port: <%= config[:port].to_json %>\n"
      "      :ssl: <%= config[:ssl].to_json %>\n"
      "      :start_tls: <%= config[:start_tls].to_json %>\n"
      "      :email: <%= config[:user].to_json %>\n"
      "      :password: <%= config[:password].to_json %>\n"
      "      :idle_timeout: <%= config[:idle_timeout].to_json %>\n"
      "      :logger:\n"
      "        :log_path: <%= config[:log_path].to_json %>\n"
      "\n"
      "      :name: <%= config[:mailbox].to_json %>\n"
      "\n"
      "      :delete_after_delivery: <%= config.fetch(:delete_after_delivery, true).to_json %>\n"
      "      :expunge_deleted: <%= config[:expunge_deleted].to_json %>\n"
      "\n"
      "      <% if config[:inbox_method] %>\n"
      "      :inbox_method: <%= config[:inbox_method] %>\n"
      "      <% end %>\n");
  EXPECT_FALSE(r.ok());
  ASSERT_EQ(r.diagnostics.size(), 6u) << test::dump(r);
  EXPECT_EQ(r.diagnostics[0].where.line, 2);
  EXPECT_NE(r.diagnostics[0].message.find("Rendering GitLab's ERB config"), std::string::npos);
  EXPECT_DIAG(r, "config.yml:7: unsupported ERB expression `config[:host].to_json` (see line 2)");
  EXPECT_DIAG(r, "config.yml:2: 10 more unsupported ERB expressions not listed");
}

}  // namespace
}  // namespace mailroom::config
