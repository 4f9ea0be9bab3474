// One message taken from a mailbox, on its way to a delivery target.
#pragma once

#include <cstdint>
#include <string>

namespace mailroom {

struct mail_message {
  std::string mailbox_email;  // the account (config `email`)
  std::string mailbox_name;   // the folder (config `name`)
  std::uint32_t uidvalidity = 0;
  std::uint32_t uid = 0;
  std::string body;  // the raw RFC 5322 bytes as the server sent them
  // Stable identity of this message in this folder (delivery::stable_jid of
  // server, email, name, UIDVALIDITY and UID): the Sidekiq jid, the webhook's
  // Idempotency-Key and the arbitration record, equal on every redelivery.
  std::string id;
};

}  // namespace mailroom
