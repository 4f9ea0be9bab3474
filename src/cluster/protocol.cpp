#include "cluster/protocol.hpp"

#include <charconv>
#include <string_view>

namespace mailroom::cluster {

namespace {

// KEYS[1] members, KEYS[2] the instance record; ARGV: id, ttl ms, record.
// Expiry on Redis's clock (TIME), the same for every instance.
constexpr std::string_view heartbeat_script =
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
    "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) "
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) "
    "redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2]) "
    "return redis.call('ZRANGE', KEYS[1], 0, -1)";

// KEYS: lease keys; ARGV[1] ttl ms, ARGV[i + 1] the value for KEYS[i].
constexpr std::string_view take_script =
    "local r = {} "
    "for i, k in ipairs(KEYS) do "
    "if redis.call('SET', k, ARGV[i + 1], 'NX', 'PX', ARGV[1]) then r[i] = 1 else r[i] = 0 end "
    "end return r";
constexpr std::string_view renew_script =
    "local r = {} "
    "for i, k in ipairs(KEYS) do "
    "if redis.call('GET', k) == ARGV[i + 1] then redis.call('PEXPIRE', k, ARGV[1]) r[i] = 1 "
    "else r[i] = 0 end "
    "end return r";
// ARGV[i] the value for KEYS[i].
constexpr std::string_view release_script =
    "local r = {} "
    "for i, k in ipairs(KEYS) do "
    "if redis.call('GET', k) == ARGV[i] then redis.call('DEL', k) r[i] = 1 else r[i] = 0 end "
    "end return r";

std::vector<std::string> eval(std::string_view script, const std::vector<lease_ref>& leases,
                              const std::string* first_arg) {
  std::vector<std::string> cmd{"EVAL", std::string(script), std::to_string(leases.size())};
  cmd.reserve(3 + 2 * leases.size() + 1);
  for (const auto& l : leases) cmd.push_back(l.key);
  if (first_arg != nullptr) cmd.push_back(*first_arg);
  for (const auto& l : leases) cmd.push_back(l.value);
  return cmd;
}

}  // namespace

std::string lease_value(const std::string& instance_id, std::int64_t taken_at_ms) {
  return instance_id + " " + std::to_string(taken_at_ms);
}

std::optional<lease_holder> parse_lease_value(const std::string& value) {
  const auto space = value.rfind(' ');
  if (space == std::string::npos || space == 0) return std::nullopt;
  lease_holder h;
  h.instance_id = value.substr(0, space);
  const char* first = value.data() + space + 1;
  const char* last = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(first, last, h.taken_at_ms);
  if (ec != std::errc{} || ptr != last || first == last) return std::nullopt;
  return h;
}

std::vector<std::string> heartbeat_command(const keys& k, const std::string& id,
                                           std::chrono::milliseconds ttl,
                                           const std::string& instance_json) {
  return {"EVAL", std::string(heartbeat_script), "2",          k.members(), k.instance(id),
          id,     std::to_string(ttl.count()),   instance_json};
}

std::optional<std::vector<std::string>> parse_members(const redis::reply& r) {
  if (r.k != redis::reply::kind::array) return std::nullopt;
  std::vector<std::string> out;
  out.reserve(r.elements.size());
  for (const auto& e : r.elements) {
    if (e.k != redis::reply::kind::bulk) return std::nullopt;
    out.push_back(e.str);
  }
  return out;
}

std::vector<std::string> take_command(const std::vector<lease_ref>& leases,
                                      std::chrono::milliseconds ttl) {
  const std::string t = std::to_string(ttl.count());
  return eval(take_script, leases, &t);
}

std::vector<std::string> renew_command(const std::vector<lease_ref>& leases,
                                       std::chrono::milliseconds ttl) {
  const std::string t = std::to_string(ttl.count());
  return eval(renew_script, leases, &t);
}

std::vector<std::string> release_command(const std::vector<lease_ref>& leases) {
  return eval(release_script, leases, nullptr);
}

std::vector<lease_reply> parse_lease_replies(const redis::reply& r, std::size_t n) {
  std::vector<lease_reply> out(n, lease_reply::unavailable);
  if (r.k != redis::reply::kind::array || r.elements.size() != n) return out;
  for (std::size_t i = 0; i < n; ++i) {
    const auto& e = r.elements[i];
    if (e.k != redis::reply::kind::integer)
      return std::vector<lease_reply>(n, lease_reply::unavailable);
    out[i] = e.integer == 1 ? lease_reply::done : lease_reply::not_ours;
  }
  return out;
}

}  // namespace mailroom::cluster
