// mail_room's sidekiq delivery (lib/mail_room/delivery/sidekiq.rb,
// mail_room-behaviour §3.2): one `LPUSH queue:<queue> <job json>` per message,
// with the namespace prefix when configured. No SADD queues, no MULTI:
// Sidekiq 6/7 process such jobs.
#pragma once

#include "common/logger.hpp"
#include "config/model.hpp"
#include "delivery/deliverer.hpp"
#include "redis/client.hpp"

#include <memory>
#include <string>

namespace mailroom::delivery {

class sidekiq_deliverer : public deliverer {
 public:
  // `client` may be shared with other mailboxes pushing to the same Redis.
  // `max_job_size`: a larger job is refused (errc::refused), not pushed; 0: no limit.
  sidekiq_deliverer(const config::sidekiq_options& opts, std::shared_ptr<redis::client> client,
                    std::shared_ptr<log::logger> logger, std::uint64_t max_job_size = 0);

  const char* class_name() const override { return "MailRoom::Delivery::Sidekiq"; }

  // Acknowledged when LPUSH answers an integer (the new list length). An error
  // reply, a lost connection or a timeout leave the message in the mailbox.
  boost::asio::awaitable<result> deliver(const mail_message& m) override;

  // The list the jobs go to: "<ns>:queue:<queue>" or "queue:<queue>".
  const std::string& queue_key() const { return queue_key_; }

 private:
  std::string worker_;
  std::string queue_;
  std::string queue_key_;
  std::shared_ptr<redis::client> client_;
  std::shared_ptr<log::logger> logger_;
  std::uint64_t max_job_size_;
};

}  // namespace mailroom::delivery
