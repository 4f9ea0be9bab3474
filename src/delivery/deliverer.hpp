// The delivery interface: hand one message to the application and say whether
// it was acknowledged. A message leaves the mailbox only after ok().
#pragma once

#include "common/message.hpp"
#include "delivery/errc.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <string>

namespace mailroom::delivery {

struct result {
  boost::system::error_code ec;  // empty: acknowledged by the target
  std::string detail;            // for the log; never contains a secret
  bool ok() const { return !ec; }
};

class deliverer {
 public:
  virtual ~deliverer() = default;
  // mail_room's class name, logged as "deliverer" (e.g. "MailRoom::Delivery::Sidekiq").
  virtual const char* class_name() const = 0;
  virtual boost::asio::awaitable<result> deliver(const mail_message& m) = 0;
};

}  // namespace mailroom::delivery
