#include "arbitration/redis_arbitrator.hpp"

#include <fmt/format.h>

#include <utility>
#include <vector>

namespace mailroom::arbitration {

std::string arbitration_key(const config::arbitration_options& opts, const claim_request& r) {
  switch (opts.key_format) {
    case config::arbitration_key_format::mail_room:
      return opts.redis.key(fmt::format("delivered:{}", r.uid));
    case config::arbitration_key_format::scoped:
      break;
  }
  // A UID names a message only within one folder of one account and one
  // UIDVALIDITY (RFC 3501 §2.3.1.1), so all of them go into the key.
  return opts.redis.key(
      fmt::format("delivered:{}:{}:{}:{}", r.mailbox_email, r.mailbox_name, r.uidvalidity, r.uid));
}

redis_arbitrator::redis_arbitrator(config::arbitration_options opts,
                                   std::shared_ptr<redis::client> client)
    : opts_(std::move(opts)), client_(std::move(client)) {}

boost::asio::awaitable<claim_result> redis_arbitrator::claim(const claim_request& r,
                                                             std::string& error_detail) {
  const std::string key = arbitration_key(opts_, r);
  // redis-rb's wire order for `set(key, 1, nx: true, ex: 600)`:
  // "set" "delivered:101" "1" "EX" "600" "NX".
  std::vector<std::string> args{"SET", key, "1", "EX", std::to_string(opts_.expiration.count()),
                                "NX"};
  auto reply = co_await client_->command(std::move(args));
  if (!reply.has_value()) {
    error_detail = fmt::format("SET {} NX on {}: {} ({})", key, client_->describe(),
                               reply.error().message(), client_->last_error());
    co_return claim_result::unavailable;
  }
  if (reply->is_simple("OK")) co_return claim_result::granted;
  if (reply->is_null()) co_return claim_result::taken;
  error_detail =
      fmt::format("SET {} NX on {}: {}", key, client_->describe(), redis::to_string(*reply));
  co_return claim_result::unavailable;
}

boost::asio::awaitable<void> redis_arbitrator::release(const claim_request& r) {
  std::vector<std::string> args{"DEL", arbitration_key(opts_, r)};
  co_await client_->command(std::move(args));
}

}  // namespace mailroom::arbitration
