// The sidekiq deliverer (mail_room-behaviour §3.2) against a real redis-server.
#include "delivery/sidekiq.hpp"

#include "async_helpers.hpp"
#include "fake_server.hpp"
#include "support/redis_server.hpp"

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>

namespace mailroom::delivery {
namespace {

namespace asio = boost::asio;
using redis::reply;
using test_support::redis_server;
using test_support::redis_server_options;
using test_support::run_async;

mail_message message(std::string body) {
  return mail_message{.mailbox_email = "incoming@example.com",
                      .mailbox_name = "inbox",
                      .uidvalidity = 1,
                      .uid = 101,
                      .body = std::move(body),
                      .id = {}};
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

class SidekiqDelivery : public testing::Test {
 protected:
  sidekiq_deliverer make(config::sidekiq_options o, std::shared_ptr<log::logger> logger = nullptr) {
    if (o.redis.port == 6379) o.redis.port = server.port();
    o.redis.host = "127.0.0.1";
    auto c = std::make_shared<redis::client>(ctx.get_executor(), o.redis);
    return sidekiq_deliverer(o, c, logger ? logger : log::logger::discard());
  }

  std::string only_job(const std::string& key, int db = 0) {
    auto list = server.cmd_in_db(db, {"LRANGE", key, "0", "-1"});
    EXPECT_TRUE(list.has_value());
    if (!list) return {};
    EXPECT_EQ(list->elements.size(), 1u) << redis::to_string(*list);
    return list->elements.empty() ? std::string() : list->elements[0].str;
  }

  asio::io_context ctx;
  redis_server server;
};

TEST_F(SidekiqDelivery, PushesMailRoomsJob) {
  config::sidekiq_options o;
  o.queue = "email_receiver";
  o.worker = "EmailReceiverWorker";
  auto d = make(o);
  EXPECT_STREQ(d.class_name(), "MailRoom::Delivery::Sidekiq");
  const std::string body = "From: a@example.com\r\nSubject: caf\xc3\xa9 / test\r\n\r\nhello\r\n";
  const double before = now_seconds();
  auto r = run_async(ctx, d.deliver(message(body)));
  ASSERT_TRUE(r.ok()) << r.detail;

  const std::string raw = only_job("queue:email_receiver");
  const auto job = nlohmann::ordered_json::parse(raw);
  std::vector<std::string> keys;
  for (const auto& [k, v] : job.items()) keys.push_back(k);
  EXPECT_EQ(keys,
            (std::vector<std::string>{"class", "args", "queue", "jid", "retry", "enqueued_at"}));
  EXPECT_EQ(job["class"], "EmailReceiverWorker");
  ASSERT_TRUE(job["args"].is_array());
  ASSERT_EQ(job["args"].size(), 1u);
  EXPECT_EQ(job["args"][0].get<std::string>(), body);
  EXPECT_EQ(job["queue"], "email_receiver");
  EXPECT_TRUE(std::regex_match(job["jid"].get<std::string>(), std::regex("[0-9a-f]{24}")))
      << job["jid"];
  EXPECT_EQ(job["retry"], false);
  ASSERT_TRUE(job["enqueued_at"].is_number_float());
  EXPECT_GE(job["enqueued_at"].get<double>(), before - 1);
  EXPECT_LE(job["enqueued_at"].get<double>(), now_seconds() + 1);
  // Ruby's JSON.generate: raw UTF-8, "/" unescaped, CR/LF as \r\n escapes.
  EXPECT_NE(raw.find("caf\xc3\xa9 / test\\r\\n"), std::string::npos) << raw;
}

TEST_F(SidekiqDelivery, EveryJobHasItsOwnJid) {
  config::sidekiq_options o;
  o.worker = "W";
  auto d = make(o);
  ASSERT_TRUE(run_async(ctx, d.deliver(message("a"))).ok());
  ASSERT_TRUE(run_async(ctx, d.deliver(message("b"))).ok());
  auto list = server.cmd({"LRANGE", "queue:default", "0", "-1"});
  ASSERT_TRUE(list.has_value());
  ASSERT_EQ(list->elements.size(), 2u);
  const auto newest = nlohmann::json::parse(list->elements[0].str);
  const auto oldest = nlohmann::json::parse(list->elements[1].str);
  EXPECT_EQ(newest["args"][0], "b");  // LPUSH: newest first, Sidekiq pops from the right
  EXPECT_EQ(oldest["args"][0], "a");
  EXPECT_NE(newest["jid"], oldest["jid"]);
}

TEST_F(SidekiqDelivery, NamespaceAndDatabase) {
  config::sidekiq_options o;
  o.worker = "EmailReceiverWorker";
  o.redis.namespace_prefix = "resque:gitlab";
  o.redis.db = 2;
  auto d = make(o);
  EXPECT_EQ(d.queue_key(), "resque:gitlab:queue:default");
  auto r = run_async(ctx, d.deliver(message("x")));
  ASSERT_TRUE(r.ok()) << r.detail;
  const auto job = nlohmann::json::parse(only_job("resque:gitlab:queue:default", 2));
  EXPECT_EQ(job["queue"], "default");  // the namespace is a key prefix, not part of the queue
  auto in_db0 = server.cmd({"EXISTS", "resque:gitlab:queue:default"});
  ASSERT_TRUE(in_db0.has_value());
  EXPECT_EQ(*in_db0, reply::number(0));
}

TEST_F(SidekiqDelivery, InvalidUtf8IsConvertedNotRejected) {
  config::sidekiq_options o;
  o.worker = "W";
  auto d = make(o);
  // ISO-8859-1 body: 0xE9 alone is not UTF-8.
  auto r =
      run_async(ctx, d.deliver(message("Subject: caf\xe9\r\n\r\nd\xe9j\xe0 vu, tr\xe8s bien\r\n")));
  ASSERT_TRUE(r.ok()) << r.detail;
  const auto job = nlohmann::json::parse(only_job("queue:default"));  // throws on invalid UTF-8
  const std::string arg = job["args"][0];
  EXPECT_NE(arg.find("caf\xc3\xa9"), std::string::npos) << arg;
}

TEST_F(SidekiqDelivery, LogsMailRoomsLine) {
  const auto path = server.dir() / "mailroom.log";
  std::string error;
  auto logger = log::logger::to_file(path.string(), error);
  ASSERT_TRUE(logger) << error;
  config::sidekiq_options o;
  o.worker = "W";
  auto d = make(o, logger);
  ASSERT_TRUE(run_async(ctx, d.deliver(message("x"))).ok());
  logger.reset();
  std::ifstream in(path);
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  const auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["severity"], "INFO");
  EXPECT_EQ(j["delivery_method"], "Sidekiq");
  EXPECT_EQ(j["action"], "message pushed");
}

TEST_F(SidekiqDelivery, RedisDownIsTargetUnavailableWithoutThePassword) {
  server.stop();
  config::sidekiq_options o;
  o.worker = "W";
  o.redis.password = secret("hunter2-sesame");
  auto d = make(o);
  auto r = run_async(ctx, d.deliver(message("x")));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.ec, errc::target_unavailable);
  EXPECT_NE(r.detail.find("LPUSH queue:default"), std::string::npos) << r.detail;
  EXPECT_EQ(r.detail.find("hunter2"), std::string::npos) << r.detail;
}

TEST_F(SidekiqDelivery, ErrorReplyIsTargetUnavailable) {
  ASSERT_TRUE(server.cmd({"SET", "queue:default", "not a list"}).has_value());
  config::sidekiq_options o;
  o.worker = "W";
  auto d = make(o);
  auto r = run_async(ctx, d.deliver(message("x")));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.ec, errc::target_unavailable);
  EXPECT_NE(r.detail.find("WRONGTYPE"), std::string::npos) << r.detail;
}

// Exactly one command per message: no SADD queues, no MULTI (§3.2).
TEST(SidekiqDeliveryWire, OneLpushPerMessage) {
  asio::io_context ctx;
  test_support::fake_server server(ctx, [](const std::string& got) {
    return got.ends_with("}\r\n") ? std::string(":1\r\n") : std::string();
  });
  config::sidekiq_options o;
  o.worker = "EmailReceiverWorker";
  o.queue = "email_receiver";
  o.redis.host = "127.0.0.1";
  o.redis.port = server.port();
  sidekiq_deliverer d(o, std::make_shared<redis::client>(ctx.get_executor(), o.redis),
                      log::logger::discard());
  const auto r = run_async(ctx, [&]() -> asio::awaitable<result> {
    auto res = co_await d.deliver(message("body"));
    server.stop();
    co_return res;
  }());
  ASSERT_TRUE(r.ok()) << r.detail;
  const std::string& wire = server.received();
  const std::string head = "*3\r\n$5\r\nLPUSH\r\n$20\r\nqueue:email_receiver\r\n$";
  ASSERT_EQ(wire.substr(0, head.size()), head) << wire;
  redis::resp_parser p;  // commands are RESP arrays too: count them
  p.feed(wire);
  auto first = p.next();
  ASSERT_TRUE(first.has_value() && first->has_value());
  EXPECT_EQ((*first)->elements.size(), 3u);
  auto second = p.next();
  ASSERT_TRUE(second.has_value());
  EXPECT_FALSE(second->has_value()) << "more than one command was sent";
  const auto job = nlohmann::json::parse((*first)->elements[2].str);
  EXPECT_EQ(job["args"][0], "body");
}

}  // namespace
}  // namespace mailroom::delivery
