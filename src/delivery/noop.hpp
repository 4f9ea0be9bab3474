// mail_room's noop delivery: accepts every message and does nothing with it
// (the message is then scrubbed like any delivered one).
#pragma once

#include "delivery/deliverer.hpp"

namespace mailroom::delivery {

class noop_deliverer : public deliverer {
 public:
  const char* class_name() const override { return "MailRoom::Delivery::Noop"; }
  boost::asio::awaitable<result> deliver(const mail_message&) override { co_return result{}; }
};

}  // namespace mailroom::delivery
