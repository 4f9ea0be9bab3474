// What a delivery pass needs from the place the mail is: an IMAP folder
// (mailbox::imap_inbox) or, later, a Microsoft Graph mail folder. The pass
// itself (pass_engine, run by pass_runner) is the same for every inbox.
//
// Messages are named by a 32-bit key: the IMAP UID, or an inbox's own index
// of what it listed.
#pragma once

#include "arbitration/arbitrator.hpp"
#include "common/message.hpp"
#include "mailbox/pass_engine.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace mailroom::mailbox {

// Called with each body as it arrives, in the inbox's order.
using body_sink = std::function<void(std::uint32_t key, std::string&& body)>;

class inbox {
 public:
  virtual ~inbox() = default;

  // Sizes of these messages; a message gone meanwhile is left out.
  virtual boost::asio::awaitable<boost::system::error_code> sizes(
      const std::vector<std::uint32_t>& keys, std::vector<message_size>& out) = 0;
  // Keep them out of later passes (flag or move, see set_aside.hpp). The
  // bool: they were left flagged \Deleted, to leave with the pass's expunge.
  virtual boost::asio::awaitable<std::pair<boost::system::error_code, bool>> set_aside(
      const std::vector<std::uint32_t>& keys, aside_reason reason) = 0;
  virtual boost::asio::awaitable<boost::system::error_code> fetch_bodies(
      const std::vector<std::uint32_t>& keys, const body_sink& on_body) = 0;
  // After the target acknowledged: \Seen, and \Deleted when `remove`.
  virtual boost::asio::awaitable<boost::system::error_code> mark_delivered(
      const std::vector<std::uint32_t>& keys, bool remove) = 0;
  virtual boost::asio::awaitable<boost::system::error_code> expunge(
      const std::vector<std::uint32_t>& keys) = 0;

  // The message as the deliverer gets it (with its stable jid), and its
  // arbitration key.
  virtual mail_message message(std::uint32_t key, std::string&& body) const = 0;
  virtual arbitration::claim_request claim_request(std::uint32_t key) const = 0;
};

}  // namespace mailroom::mailbox
