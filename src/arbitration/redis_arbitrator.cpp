#include "arbitration/redis_arbitrator.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <random>
#include <string_view>

#include <utility>
#include <vector>

namespace mailroom::arbitration {

std::string arbitration_key(const config::arbitration_options& opts, const claim_request& r) {
  switch (opts.key_format) {
    case config::arbitration_key_format::mail_room:
      // mail_room keys a Graph message by its id, an IMAP one by its UID.
      return r.message_id.empty() ? opts.redis.key(fmt::format("delivered:{}", r.uid))
                                  : opts.redis.key("delivered:" + r.message_id);
    case config::arbitration_key_format::scoped:
      break;
  }
  // A UID names a message only within one folder of one account on one
  // server and one UIDVALIDITY (RFC 3501 §2.3.1.1), so all of them go into
  // the key. A Graph message's immutable id stands for UIDVALIDITY and UID.
  if (!r.message_id.empty())
    return opts.redis.key(fmt::format("delivered:{}/{}@{}:{}", r.mailbox_email,
                                      config::canonical_folder(r.mailbox_name), r.server,
                                      r.message_id));
  return opts.redis.key(fmt::format("delivered:{}/{}@{}:{}:{}", r.mailbox_email,
                                    config::canonical_folder(r.mailbox_name), r.server,
                                    r.uidvalidity, r.uid));
}

std::string unscoped_arbitration_key(const config::arbitration_options& opts,
                                     const claim_request& r) {
  return opts.redis.key(
      fmt::format("delivered:{}:{}:{}:{}", r.mailbox_email, r.mailbox_name, r.uidvalidity, r.uid));
}

namespace {

// Redis runs a script atomically (EVAL), so nothing comes between its GET and
// its write: another instance's claim is never removed or replaced.
// DEL the key if it holds our claim (ARGV[1]).
constexpr std::string_view release_script =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end "
    "return 0";
// EXPIRE the key (ARGV[2] seconds) if it holds our claim.
constexpr std::string_view renew_script =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('EXPIRE', KEYS[1], ARGV[2]) "
    "return 1 end return 0";
// SET the delivered record (ARGV[2], EX ARGV[3]) if the key holds our claim or
// is gone.
constexpr std::string_view record_script =
    "local v = redis.call('GET', KEYS[1]) "
    "if v == ARGV[1] or v == false then "
    "redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) return 1 end "
    "return 0";

std::string instance_name() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  std::random_device rd;
  return fmt::format("claimed:{}:{}:{:08x}", host, ::getpid(), rd());
}

}  // namespace

redis_arbitrator::redis_arbitrator(config::arbitration_options opts,
                                   std::shared_ptr<redis::client> client, bool honour_unscoped_keys)
    : opts_(std::move(opts)),
      client_(std::move(client)),
      claim_value_(instance_name()),
      honour_unscoped_keys_(honour_unscoped_keys &&
                            opts_.key_format == config::arbitration_key_format::scoped),
      // Keys of a previous version were written before this process started;
      // the longest of them lives `expiration` (a delivered record) or
      // claim_ttl (a claim).
      unscoped_keys_until_(std::chrono::steady_clock::now() +
                           std::max(opts_.expiration, opts_.claim_ttl)) {}

bool redis_arbitrator::unscoped_keys_may_exist() const {
  return honour_unscoped_keys_ && std::chrono::steady_clock::now() < unscoped_keys_until_;
}

boost::asio::awaitable<claim_result> redis_arbitrator::existing(const std::string& key,
                                                                std::string& error_detail) {
  std::vector<std::string> get{"GET", key};
  auto value = co_await client_->command(std::move(get));
  if (!value.has_value()) {
    error_detail = fmt::format("GET {} on {}: {} ({})", key, client_->describe(),
                               value.error().message(), client_->last_error());
    co_return claim_result::unavailable;
  }
  if (value->is_null()) co_return claim_result::granted;  // no such key
  if (value->k == redis::reply::kind::bulk && value->str.starts_with("delivered:"))
    co_return claim_result::delivered;
  // Another claim, or mail_room's "1".
  co_return claim_result::taken;
}

boost::asio::awaitable<claim_result> redis_arbitrator::claim(const claim_request& r,
                                                             std::string& error_detail) {
  const std::string key = arbitration_key(opts_, r);
  // mail_room's wire order ("SET" key value "EX" n "NX"), with a claim value
  // and the shorter claim TTL.
  std::vector<std::string> args{
      "SET", key, claim_value_, "EX", std::to_string(opts_.claim_ttl.count()), "NX"};
  auto reply = co_await client_->command(std::move(args));
  if (!reply.has_value()) {
    error_detail = fmt::format("SET {} NX on {}: {} ({})", key, client_->describe(),
                               reply.error().message(), client_->last_error());
    co_return claim_result::unavailable;
  }
  if (!reply->is_null() && !reply->is_simple("OK")) {
    error_detail =
        fmt::format("SET {} NX on {}: {}", key, client_->describe(), redis::to_string(*reply));
    co_return claim_result::unavailable;
  }
  if (reply->is_null()) {
    // The key exists: a claim in progress, or a finished delivery whose
    // instance did not flag the message (it died, or it is about to). If it
    // expired between the SET and the GET, it is looked at again next pass.
    const claim_result seen = co_await existing(key, error_detail);
    co_return seen == claim_result::granted ? claim_result::taken : seen;
  }
  // No previous version read Graph inboxes.
  if (!unscoped_keys_may_exist() || !r.message_id.empty()) co_return claim_result::granted;

  // Granted under the new key; the previous version may have claimed or
  // delivered the message under its key, without the server.
  claim_result result = co_await existing(unscoped_arbitration_key(opts_, r), error_detail);
  if (result != claim_result::granted) {
    // Not ours after all: give the new key back.
    std::vector<std::string> eval{"EVAL", std::string(release_script), "1", key, claim_value_};
    co_await client_->command(std::move(eval));
  }
  co_return result;
}

boost::asio::awaitable<write_result> redis_arbitrator::compare_and_set(
    std::vector<std::string> eval, const std::string& what, const std::string& key,
    std::string& error_detail) {
  auto reply = co_await client_->command(std::move(eval));
  if (!reply.has_value()) {
    error_detail = fmt::format("{} {} on {}: {} ({})", what, key, client_->describe(),
                               reply.error().message(), client_->last_error());
    co_return write_result::unavailable;
  }
  if (reply->k != redis::reply::kind::integer) {
    error_detail =
        fmt::format("{} {} on {}: {}", what, key, client_->describe(), redis::to_string(*reply));
    co_return write_result::unavailable;
  }
  co_return reply->integer == 1 ? write_result::done : write_result::claim_lost;
}

boost::asio::awaitable<write_result> redis_arbitrator::mark_delivered(const claim_request& r,
                                                                      const std::string& jid,
                                                                      std::string& error_detail) {
  const std::string key = arbitration_key(opts_, r);
  std::vector<std::string> eval{"EVAL",
                                std::string(record_script),
                                "1",
                                key,
                                claim_value_,
                                "delivered:" + jid,
                                std::to_string(opts_.expiration.count())};
  co_return co_await compare_and_set(std::move(eval), "recording the delivery in", key,
                                     error_detail);
}

boost::asio::awaitable<write_result> redis_arbitrator::renew(const claim_request& r,
                                                             std::string& error_detail) {
  const std::string key = arbitration_key(opts_, r);
  std::vector<std::string> eval{"EVAL",       std::string(renew_script),
                                "1",          key,
                                claim_value_, std::to_string(opts_.claim_ttl.count())};
  co_return co_await compare_and_set(std::move(eval), "renewing the claim", key, error_detail);
}

boost::asio::awaitable<write_result> redis_arbitrator::release(const claim_request& r,
                                                               std::string& error_detail) {
  const std::string key = arbitration_key(opts_, r);
  std::vector<std::string> eval{"EVAL", std::string(release_script), "1", key, claim_value_};
  co_return co_await compare_and_set(std::move(eval), "releasing the claim", key, error_detail);
}

}  // namespace mailroom::arbitration
