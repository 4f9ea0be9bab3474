// What a cluster's Redis says (`:cluster:`), read-only: the live instances
// and which of them holds the lease of which mailbox, since when.
#pragma once

#include "cluster/protocol.hpp"
#include "config/model.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mailroom::ops {

struct cluster_member {
  std::string id;
  std::int64_t expires_ms = 0;    // membership, on Redis's clock
  nlohmann::ordered_json record;  // the instance's own JSON (version, started), or null
};

struct cluster_view {
  bool ok = false;
  std::string error;                                    // never a secret
  std::string redis;                                    // the Redis described
  std::int64_t now_ms = 0;                              // Redis's clock (TIME)
  std::vector<cluster_member> members;                  // live ones, by id
  std::map<std::string, cluster::lease_holder> leases;  // mailbox label -> holder
};

boost::asio::awaitable<cluster_view> read_cluster(boost::asio::any_io_executor ex,
                                                  const config::cluster_options& c);

// {"instance": id, "since": ISO time, "for_seconds": n} or null: the owner
// of `label` as `status --json` shows it.
nlohmann::ordered_json owner_json(const cluster_view& v, const std::string& label);

}  // namespace mailroom::ops
