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
  boost::asio::awaitable<write_result> release(const claim_request&, std::string&) override {
    co_return write_result::done;
  }
  boost::asio::awaitable<write_result> renew(const claim_request&, std::string&) override {
    co_return write_result::done;
  }
  std::chrono::seconds claim_ttl() const override { return std::chrono::seconds(0); }
  boost::asio::awaitable<write_result> mark_delivered(const claim_request&, const std::string&,
                                                      std::string&) override {
    co_return write_result::done;
  }
};

}  // namespace mailroom::arbitration
