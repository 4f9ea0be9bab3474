// Probing a mailbox's delivery target and arbitration store for `status` and
// `check`, without delivering anything.
#pragma once

#include "config/model.hpp"
#include "redis/client.hpp"

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace mailroom::ops {

struct probe {
  bool ok = false;
  std::string text;  // what was found, or the failure; never a secret
};

// PING on `target`.
boost::asio::awaitable<probe> ping_redis(redis::client& r);
// LLEN of the Sidekiq queue.
boost::asio::awaitable<probe> sidekiq_queue_length(redis::client& r,
                                                   const config::sidekiq_options& opts,
                                                   std::optional<std::int64_t>& length);
// OPTIONS on the webhook URL: any HTTP answer proves it reachable; no message
// is sent.
boost::asio::awaitable<probe> reach_webhook(const config::postback_options& opts);
// The JWT secret file decodes (strict base64, non-empty key).
probe check_jwt_secret(const config::postback_options& opts);

// letter_opener's location: an existing writable directory, or one that can
// be created (its nearest existing parent is writable). Nothing is created.
probe check_writable_dir(const std::string& path);

// The SCAN pattern matching the arbitration keys of `mb` at `uidvalidity`
// (mail_room key format: every key of the namespace).
std::string arbitration_pattern(const config::mailbox& mb, std::uint32_t uidvalidity);
// SCAN MATCH <pattern>: how many keys exist.
boost::asio::awaitable<probe> count_keys(redis::client& r, const std::string& pattern,
                                         std::optional<std::int64_t>& count);

}  // namespace mailroom::ops
