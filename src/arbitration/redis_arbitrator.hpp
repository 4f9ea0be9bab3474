// mail_room's redis arbitration (lib/mail_room/arbitration/redis.rb,
// mail_room-behaviour §4.2): an instance may deliver a message only if it is
// the first to set its key, `SET <key> 1 EX 600 NX`. The key expires so that a
// message claimed by an instance that crashed becomes claimable again.
#pragma once

#include "arbitration/arbitrator.hpp"
#include "config/model.hpp"
#include "redis/client.hpp"

#include <memory>
#include <string>

namespace mailroom::arbitration {

// The claim key for `r`:
//   mail_room format: "<ns>:delivered:<uid>", exactly mail_room's key (mailboxes
//                     sharing the namespace block each other on equal UIDs);
//   scoped (default): "<ns>:delivered:<email>:<mailbox>:<uidvalidity>:<uid>".
// The operator CLI uses it to inspect and clear claims.
std::string arbitration_key(const config::arbitration_options& opts, const claim_request& r);

class redis_arbitrator : public arbitrator {
 public:
  redis_arbitrator(config::arbitration_options opts, std::shared_ptr<redis::client> client);

  const char* class_name() const override { return "MailRoom::Arbitration::Redis"; }

  // granted on +OK, taken on a null reply (the key exists), unavailable on an
  // error reply, a lost connection or a timeout (with `error_detail` set).
  boost::asio::awaitable<claim_result> claim(const claim_request& r,
                                             std::string& error_detail) override;

  // DEL <key>; failures are ignored (the key expires anyway).
  boost::asio::awaitable<void> release(const claim_request& r) override;

 private:
  config::arbitration_options opts_;
  std::shared_ptr<redis::client> client_;
};

}  // namespace mailroom::arbitration
