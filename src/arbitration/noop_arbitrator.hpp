// mail_room's noop arbitration (lib/mail_room/arbitration/noop.rb): every
// message is ours. The default when `arbitration_method` is not set.
#pragma once

#include "arbitration/arbitrator.hpp"

namespace mailroom::arbitration {

class noop_arbitrator : public arbitrator {
 public:
  const char* class_name() const override { return "MailRoom::Arbitration::Noop"; }
  boost::asio::awaitable<claim_result> claim(const claim_request&, std::string&) override {
    co_return claim_result::granted;
  }
  boost::asio::awaitable<void> release(const claim_request&) override { co_return; }
  boost::asio::awaitable<void> mark_delivered(const claim_request&, const std::string&) override {
    co_return;
  }
};

}  // namespace mailroom::arbitration
