// Arbitration lets several instances watch one mailbox and deliver each message
// once: before fetching a message an instance claims it; only the winner fetches.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstdint>
#include <string>

namespace mailroom::arbitration {

struct claim_request {
  std::string mailbox_email;
  std::string mailbox_name;
  // config::mailbox::server(): "host:port". UIDVALIDITY is not unique across
  // servers (Cyrus gives folders created in the same second the same value),
  // so the same account and folder on two servers are two mailboxes.
  std::string server;
  std::uint32_t uidvalidity = 0;
  std::uint32_t uid = 0;
  // A Microsoft Graph message: its immutable id, which names it in place of
  // UIDVALIDITY and UID ("" for IMAP).
  std::string message_id;
};

enum class claim_result {
  granted,     // we deliver it
  taken,       // another instance holds it: skip
  delivered,   // already delivered (by any instance) but still in the folder:
               // flag it without delivering it again
  unavailable  // arbitration store unreachable: skip for now, retry next pass
};

// What became of a release or a delivered record.
enum class write_result {
  done,         // written, or nothing was left to do
  claim_lost,   // the key holds another value (our claim expired; another instance
                // may have claimed or delivered the message): nothing was changed
  unavailable,  // the store did not answer (error_detail says why)
};

class arbitrator {
 public:
  virtual ~arbitrator() = default;
  // mail_room's class name, logged as "arbitrator".
  virtual const char* class_name() const = 0;
  virtual boost::asio::awaitable<claim_result> claim(const claim_request& r,
                                                     std::string& error_detail) = 0;
  // Gives the claim back after a failed delivery so the next pass (of any
  // instance) can retry at once instead of after the key expires. Only this
  // instance's own claim is removed: once it expired, another instance may
  // have claimed the message meanwhile.
  virtual boost::asio::awaitable<write_result> release(const claim_request& r,
                                                       std::string& error_detail) = 0;
  // Keeps this instance's claim alive for another claim_ttl() while its
  // delivery runs, so that a claim can be short (it only has to outlive a
  // dead instance's last renewal) whatever a delivery takes.
  virtual boost::asio::awaitable<write_result> renew(const claim_request& r,
                                                     std::string& error_detail) = 0;
  // How long a claim lives unless renewed; zero when claims do not expire
  // (nothing to renew).
  virtual std::chrono::seconds claim_ttl() const = 0;
  // Records that the target acknowledged the message (job id `jid`), so that
  // an instance that still finds it unflagged (the deliverer crashed before
  // flagging it) flags it instead of delivering it twice. Written only over
  // this instance's own claim (or where the key is gone).
  virtual boost::asio::awaitable<write_result> mark_delivered(const claim_request& r,
                                                              const std::string& jid,
                                                              std::string& error_detail) = 0;
};

}  // namespace mailroom::arbitration
