#include "deliver_sync.hpp"
#include "delivery/errc.hpp"
#include "delivery/logger_delivery.hpp"
#include "delivery/noop.hpp"
#include "delivery/postback.hpp"

#include "support/temp_dir.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>

namespace mailroom::delivery {
namespace {

using test::deliver_sync;
using test::read_file;

TEST(NoopDeliverer, AlwaysDelivers) {
  noop_deliverer d;
  EXPECT_STREQ(d.class_name(), "MailRoom::Delivery::Noop");
  mail_message m;
  m.body = "anything";
  EXPECT_TRUE(deliver_sync(d, m).ok());
}

class LoggerDelivererTest : public ::testing::Test {
 protected:
  mailroom::test::temp_dir tmp_{"mailroom-logdel"};
  const std::string dir_ = tmp_.str();
};

TEST_F(LoggerDelivererTest, AppendsRubyLoggerLines) {
  const std::string path = dir_ + "/deliveries.log";
  std::ofstream(path) << "existing line\n";
  config::logger_delivery_options opts;
  opts.log_path = path;
  logger_deliverer d(opts);
  EXPECT_STREQ(d.class_name(), "MailRoom::Delivery::Logger");

  mail_message m1;
  m1.body = "Subject: one\r\n\r\nfirst body\r\n";
  mail_message m2;
  m2.body = "Subject: two\r\n\r\nsecond";
  ASSERT_TRUE(deliver_sync(d, m1).ok());
  ASSERT_TRUE(deliver_sync(d, m2).ok());

  // Ruby: Logger.new(io).info(msg) ->
  //   "I, [2026-11-28T12:40:19.223447 #9059]  INFO -- : hello\nworld\n"
  const std::string stamp = R"(I, \[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6} #)" +
                            std::to_string(::getpid()) + R"(\]  INFO -- : )";
  const std::regex expected("existing line\n" + stamp + "Subject: one\r\n\r\nfirst body\r\n\n" +
                            stamp + "Subject: two\r\n\r\nsecond\n");
  const std::string content = read_file(path);
  EXPECT_TRUE(std::regex_match(content, expected)) << content;
}

TEST_F(LoggerDelivererTest, UnopenablePathIsMisconfigured) {
  config::logger_delivery_options opts;
  opts.log_path = dir_ + "/no/such/dir/deliveries.log";
  logger_deliverer d(opts);
  mail_message m;
  m.body = "x";
  const result r = deliver_sync(d, m);
  EXPECT_EQ(r.ec, make_error_code(errc::misconfigured));
  EXPECT_NE(r.detail.find("No such file"), std::string::npos) << r.detail;
}

TEST(DeliveryErrc, CodesConvertWithTheirCategoryAndMessage) {
  const boost::system::error_code ec = errc::rejected;
  EXPECT_EQ(std::string(ec.category().name()), "mailroom.delivery");
  EXPECT_EQ(ec.message(), "delivery rejected by the target");
  EXPECT_NE(make_error_code(errc::timed_out), make_error_code(errc::target_unavailable));
}

TEST(UrlWithoutUserinfo, RemovesOnlyTheUserInfo) {
  EXPECT_EQ(url_without_userinfo("https://user:pw@gitlab.example.com/api?x=@y"),
            "https://gitlab.example.com/api?x=@y");
  EXPECT_EQ(url_without_userinfo("http://user:p@ss@host:8080"), "http://host:8080");
  EXPECT_EQ(url_without_userinfo("http://token@host/"), "http://host/");
  EXPECT_EQ(url_without_userinfo("http://host/a@b"), "http://host/a@b");
  EXPECT_EQ(url_without_userinfo("http://host"), "http://host");
}

TEST(RubyLoggerPrefix, HasRubyShape) {
  const std::regex shape(R"(I, \[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6} #\d+\]  INFO -- : )");
  EXPECT_TRUE(std::regex_match(ruby_logger_info_prefix(), shape)) << ruby_logger_info_prefix();
}

}  // namespace
}  // namespace mailroom::delivery
