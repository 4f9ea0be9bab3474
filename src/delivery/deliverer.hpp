// The delivery interface: hand one message to the application and say whether
// it was acknowledged. A message leaves the mailbox only after ok().
#pragma once

#include "common/message.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <string>

namespace mailroom::delivery {

enum class errc {
  target_unavailable = 1,  // retriable: connection refused/reset, Redis down
  timed_out,               // retriable: no answer in time
  rejected,                // retriable later: the target answered but did not accept (HTTP non-2xx)
  bad_message,             // not retriable as is: cannot be encoded for the target
  misconfigured,           // not retriable: e.g. unreadable JWT secret
};
const boost::system::error_category& delivery_category();
inline boost::system::error_code make_error_code(errc e) {
  return {static_cast<int>(e), delivery_category()};
}

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

template <>
struct boost::system::is_error_code_enum<mailroom::delivery::errc> : std::true_type {};
