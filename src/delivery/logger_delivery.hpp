// mail_room's logger delivery (lib/mail_room/delivery/logger.rb): writes each
// whole message through a plain Ruby ::Logger, i.e. lines like
//   I, [2026-11-28T11:08:14.117000 #1234]  INFO -- : <raw message>\n
// to log_path (append mode, flushed after every message) or stdout.
#pragma once

#include "config/model.hpp"
#include "delivery/deliverer.hpp"

#include <cstdio>
#include <string>

namespace mailroom::delivery {

class logger_deliverer : public deliverer {
 public:
  // The file is opened at the first delivery (as mail_room builds its delivery
  // lazily); if that fails the delivery reports errc::misconfigured and the
  // next one tries again.
  explicit logger_deliverer(const config::logger_delivery_options& options);
  ~logger_deliverer() override;
  logger_deliverer(const logger_deliverer&) = delete;
  logger_deliverer& operator=(const logger_deliverer&) = delete;

  const char* class_name() const override { return "MailRoom::Delivery::Logger"; }
  // Plain stdio on the calling thread: a local file append, not socket I/O.
  boost::asio::awaitable<result> deliver(const mail_message& m) override;

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  bool owned_ = false;
};

// Ruby Logger's default line prefix for INFO at the current local time:
// "I, [<%Y-%m-%dT%H:%M:%S.%6N> #<pid>]  INFO -- : ".
std::string ruby_logger_info_prefix();

}  // namespace mailroom::delivery
