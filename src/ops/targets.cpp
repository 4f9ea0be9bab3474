#include "ops/targets.hpp"

#include "arbitration/redis_arbitrator.hpp"
#include "config/load.hpp"
#include "delivery/http_client.hpp"
#include "delivery/jwt.hpp"

#include <fmt/format.h>

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>
#include <vector>

namespace mailroom::ops {

namespace asio = boost::asio;

namespace {

std::string redis_failure(redis::client& r, const boost::system::error_code& ec) {
  const std::string detail = r.last_error();
  return fmt::format("{}: {}{}", r.describe(), ec.message(),
                     detail.empty() ? "" : " (" + detail + ")");
}

// SCAN's MATCH is a glob (Redis stringmatchlen): escape its special characters
// so an address like "a*b@x" matches only itself.
std::string glob_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

}  // namespace

asio::awaitable<probe> ping_redis(redis::client& r) {
  std::vector<std::string> args{"PING"};
  auto reply = co_await r.command(std::move(args));
  if (!reply) co_return probe{false, redis_failure(r, reply.error())};
  if (reply->is_error()) co_return probe{false, r.describe() + ": " + redis::to_string(*reply)};
  co_return probe{true, r.describe() + ": PING answered " + redis::to_string(*reply)};
}

asio::awaitable<probe> sidekiq_queue_length(redis::client& r, const config::sidekiq_options& opts,
                                            std::optional<std::int64_t>& length) {
  const std::string key = opts.redis.key("queue:" + opts.queue);
  std::vector<std::string> args{"LLEN", key};
  auto reply = co_await r.command(std::move(args));
  if (!reply) co_return probe{false, redis_failure(r, reply.error())};
  if (reply->k != redis::reply::kind::integer)
    co_return probe{false,
                    fmt::format("{}: LLEN {}: {}", r.describe(), key, redis::to_string(*reply))};
  length = reply->integer;
  co_return probe{true, fmt::format("{} length {} ({})", key, reply->integer, r.describe())};
}

asio::awaitable<probe> reach_webhook(const config::postback_options& opts) {
  delivery::http_client http(1);
  delivery::http_request req;
  // OPTIONS asks the server about the resource without acting on it
  // (RFC 9110 §9.3.7): the endpoint sees no message.
  req.method = "OPTIONS";
  req.url = opts.url;
  req.connect_timeout = opts.connect_timeout;
  req.total_timeout = opts.connect_timeout + opts.response_timeout;
  req.tls = opts.tls;
  std::string detail;
  auto resp = co_await http.perform(std::move(req), detail);
  const std::string shown = config::redact_url(opts.url);
  if (!resp) co_return probe{false, fmt::format("OPTIONS {}: {}", shown, detail)};
  co_return probe{true, fmt::format("OPTIONS {} answered HTTP {}", shown, resp->status)};
}

probe check_jwt_secret(const config::postback_options& opts) {
  std::string detail;
  auto key = delivery::load_jwt_key(opts.jwt_secret_path, detail);
  if (!key) return {false, detail.empty() ? key.error().message() : detail};
  return {true, fmt::format("{} decodes to a {}-byte key (header {})", opts.jwt_secret_path,
                            key->size(), opts.jwt_auth_header)};
}

probe check_writable_dir(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path p(path);
  if (fs::exists(p, ec)) {
    if (!fs::is_directory(p, ec)) return {false, path + " exists and is not a directory"};
    if (::access(path.c_str(), W_OK | X_OK) != 0)
      return {false, fmt::format("{}: not writable: {}", path, std::strerror(errno))};
    return {true, path + " is a writable directory"};
  }
  fs::path parent = p.parent_path();
  while (!parent.empty() && !fs::exists(parent, ec)) parent = parent.parent_path();
  if (parent.empty()) parent = ".";
  if (!fs::is_directory(parent, ec)) return {false, parent.string() + " is not a directory"};
  if (::access(parent.c_str(), W_OK | X_OK) != 0)
    return {false, fmt::format("{} does not exist and {} is not writable: {}", path,
                               parent.string(), std::strerror(errno))};
  return {true, path + " does not exist yet; it will be created"};
}

std::string arbitration_pattern(const config::mailbox& mb, std::uint32_t uidvalidity) {
  if (mb.arbitration_opts.key_format == config::arbitration_key_format::mail_room)
    return glob_escape(mb.arbitration_opts.redis.key("delivered:")) + "*";
  // The key of UID 1 minus its "1": the prefix of every key of this folder
  // and UIDVALIDITY, built by the arbitrator's own function.
  // A Graph message's key ends in its id: the key of id "x" minus the "x".
  const arbitration::claim_request r{mb.email,    mb.name, mb.server(),
                                     uidvalidity, 1,       mb.is_graph() ? "x" : ""};
  std::string key = arbitration::arbitration_key(mb.arbitration_opts, r);
  key.pop_back();
  return glob_escape(key) + "*";
}

asio::awaitable<probe> count_keys(redis::client& r, const std::string& pattern,
                                  std::optional<std::int64_t>& count) {
  std::int64_t n = 0;
  std::string cursor = "0";
  do {
    std::vector<std::string> args{"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
    auto reply = co_await r.command(std::move(args));
    if (!reply) co_return probe{false, redis_failure(r, reply.error())};
    if (reply->k != redis::reply::kind::array || reply->elements.size() != 2)
      co_return probe{false, fmt::format("{}: SCAN: {}", r.describe(), redis::to_string(*reply))};
    cursor = reply->elements[0].str;
    n += static_cast<std::int64_t>(reply->elements[1].elements.size());
  } while (cursor != "0");
  count = n;
  co_return probe{true, fmt::format("{} key(s) matching {} ({})", n, pattern, r.describe())};
}

}  // namespace mailroom::ops
