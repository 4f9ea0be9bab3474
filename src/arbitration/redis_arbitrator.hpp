// mail_room's redis arbitration (lib/mail_room/arbitration/redis.rb,
// mail_room-behaviour §4.2): an instance may deliver a message only if it is
// the first to set its key. mail_room sets `<key> 1 EX 600 NX` and never
// learns whether the delivery happened; we keep two states in the same key:
//
//   claimed:<instance>  SET NX EX claim_ttl, before the delivery. If the
//                       instance dies, the claim expires after claim_ttl
//                       (not 600 s) and another instance delivers the message.
//   delivered:<jid>     SET EX expiration, after the target acknowledged.
//                       An instance that finds this value flags the message
//                       instead of delivering it again.
//
// mail_room instances see a key either way and skip the message; the "1"
// they write reads as "taken" here. So mixed fleets still deliver once.
#pragma once

#include "arbitration/arbitrator.hpp"
#include "config/model.hpp"
#include "redis/client.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace mailroom::arbitration {

// The claim key for `r`:
//   mail_room format: "<ns>:delivered:<uid>", exactly mail_room's key (mailboxes
//                     sharing the namespace block each other on equal UIDs);
//   scoped (default): "<ns>:delivered:<email>/<folder>@<host>:<port>:<uidvalidity>:<uid>",
//                     the folder as config::canonical_folder() gives it.
// The operator CLI uses it to inspect and clear claims.
std::string arbitration_key(const config::arbitration_options& opts, const claim_request& r);

// The scoped key as versions before the server was part of it wrote it:
// "<ns>:delivered:<email>:<mailbox>:<uidvalidity>:<uid>". Those keys are
// honoured until they have expired (see redis_arbitrator), so that an upgrade
// does not deliver again what the previous version delivered.
std::string unscoped_arbitration_key(const config::arbitration_options& opts,
                                     const claim_request& r);

class redis_arbitrator : public arbitrator {
 public:
  // With `honour_unscoped_keys` (scoped format only), a claim also looks at
  // the key the previous version wrote for the message, for as long as such a
  // key can still exist: max(expiration, claim_ttl) after this object was
  // made. A "delivered:" value there means delivered, any other value (a
  // claim in progress) means taken. Pass false for a mailbox whose email and
  // folder are configured on another server too: the old key cannot tell the
  // two apart.
  redis_arbitrator(config::arbitration_options opts, std::shared_ptr<redis::client> client,
                   bool honour_unscoped_keys = true);

  const char* class_name() const override { return "MailRoom::Arbitration::Redis"; }

  // granted on +OK, taken or delivered on a null reply (the key exists; its
  // value decides), unavailable on an error reply, a lost connection or a
  // timeout (with `error_detail` set).
  boost::asio::awaitable<claim_result> claim(const claim_request& r,
                                             std::string& error_detail) override;

  // DEL <key> if it still holds claim_value() (one Lua script: a GET and a
  // DEL could let another instance's claim in between).
  boost::asio::awaitable<write_result> release(const claim_request& r,
                                               std::string& error_detail) override;

  // EXPIRE <key> claim_ttl if the key still holds claim_value().
  boost::asio::awaitable<write_result> renew(const claim_request& r,
                                             std::string& error_detail) override;
  std::chrono::seconds claim_ttl() const override { return opts_.claim_ttl; }

  // SET <key> delivered:<jid> EX <expiration> if the key holds claim_value()
  // or is gone (our claim expired and nobody took the message): a record
  // never replaces another instance's claim or record. A record that could
  // not be written costs at most a duplicate, with the same jid, if this
  // process dies before it flags the message.
  boost::asio::awaitable<write_result> mark_delivered(const claim_request& r,
                                                      const std::string& jid,
                                                      std::string& error_detail) override;

  // "claimed:<host>:<pid>:<random>", the value of this process's claims.
  const std::string& claim_value() const { return claim_value_; }

 private:
  // GET `key`: granted when absent, delivered for "delivered:...", taken for
  // any other value, unavailable when Redis did not answer.
  boost::asio::awaitable<claim_result> existing(const std::string& key, std::string& error_detail);
  bool unscoped_keys_may_exist() const;
  // Runs a compare-and-set script (EVAL) on `key`; its answer 1 is done, 0
  // claim_lost.
  boost::asio::awaitable<write_result> compare_and_set(std::vector<std::string> eval,
                                                       const std::string& what,
                                                       const std::string& key,
                                                       std::string& error_detail);

  config::arbitration_options opts_;
  std::shared_ptr<redis::client> client_;
  std::string claim_value_;
  bool honour_unscoped_keys_;
  std::chrono::steady_clock::time_point unscoped_keys_until_;
};

}  // namespace mailroom::arbitration
