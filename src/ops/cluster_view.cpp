#include "ops/cluster_view.hpp"

#include "ops/output.hpp"
#include "redis/client.hpp"

#include <fmt/format.h>

#include <charconv>

namespace mailroom::ops {

namespace asio = boost::asio;
using json = nlohmann::ordered_json;

namespace {

std::int64_t to_int(const std::string& s) {
  std::int64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

}  // namespace

asio::awaitable<cluster_view> read_cluster(asio::any_io_executor ex,
                                           const config::cluster_options& c) {
  cluster_view v;
  redis::client r(ex, c.redis);
  v.redis = r.describe();
  const cluster::keys k{c.redis.key("cluster:")};
  auto fail = [&](const std::string& what) {
    v.ok = false;
    v.error = fmt::format("{}: {}", r.describe(), what);
  };
  std::vector<std::string> time_cmd{"TIME"};
  auto time = co_await r.command(std::move(time_cmd));
  if (!time || time->k != redis::reply::kind::array || time->elements.size() != 2) {
    fail(time ? "TIME: " + redis::to_string(*time) : r.last_error());
    co_await r.close();
    co_return v;
  }
  v.now_ms = to_int(time->elements[0].str) * 1000 + to_int(time->elements[1].str) / 1000;
  std::vector<std::string> range{"ZRANGE", k.members(), "0", "-1", "WITHSCORES"};
  auto members = co_await r.command(std::move(range));
  if (!members || members->k != redis::reply::kind::array) {
    fail(members ? "ZRANGE: " + redis::to_string(*members) : r.last_error());
    co_await r.close();
    co_return v;
  }
  for (std::size_t i = 0; i + 1 < members->elements.size(); i += 2) {
    cluster_member m;
    m.id = members->elements[i].str;
    m.expires_ms = static_cast<std::int64_t>(std::stod(members->elements[i + 1].str));
    if (m.expires_ms <= v.now_ms) continue;  // expired, not yet removed
    std::vector<std::string> get{"GET", k.instance(m.id)};
    auto rec = co_await r.command(std::move(get));
    if (rec && rec->k == redis::reply::kind::bulk) m.record = json::parse(rec->str, nullptr, false);
    if (m.record.is_discarded()) m.record = nullptr;
    v.members.push_back(std::move(m));
  }
  std::string cursor = "0";
  do {
    std::vector<std::string> scan{"SCAN", cursor, "MATCH", k.lease("*"), "COUNT", "1000"};
    auto page = co_await r.command(std::move(scan));
    if (!page || page->k != redis::reply::kind::array || page->elements.size() != 2) {
      fail(page ? "SCAN: " + redis::to_string(*page) : r.last_error());
      co_await r.close();
      co_return v;
    }
    cursor = page->elements[0].str;
    const auto& found = page->elements[1].elements;
    if (found.empty()) continue;
    std::vector<std::string> mget{"MGET"};
    for (const auto& key : found) mget.push_back(key.str);
    auto values = co_await r.command(std::move(mget));
    if (!values || values->k != redis::reply::kind::array) continue;
    for (std::size_t i = 0; i < found.size() && i < values->elements.size(); ++i) {
      const auto& val = values->elements[i];
      if (val.k != redis::reply::kind::bulk) continue;  // expired meanwhile
      auto holder = cluster::parse_lease_value(val.str);
      if (!holder) continue;
      v.leases[found[i].str.substr(k.lease("").size())] = std::move(*holder);
    }
  } while (cursor != "0");
  v.ok = true;
  co_await r.close();
  co_return v;
}

json owner_json(const cluster_view& v, const std::string& label) {
  const auto it = v.leases.find(label);
  if (it == v.leases.end()) return nullptr;
  const auto& h = it->second;
  return {{"instance", h.instance_id},
          {"since", json_time(h.taken_at_ms / 1000)},
          {"for_seconds", std::max<std::int64_t>(0, (v.now_ms - h.taken_at_ms) / 1000)}};
}

}  // namespace mailroom::ops
