// The cluster mode's Redis commands and how their replies read (no I/O).
//
// Keys, under the cluster's namespace <ns>:
//   <ns>:cluster:members          sorted set: instance id -> when its
//                                 membership expires (ms, Redis's clock)
//   <ns>:cluster:instance:<id>    JSON about the instance (host, pid, version,
//                                 started), PX lease_ttl, for `status --cluster`
//   <ns>:cluster:lease:<mailbox>  "<id> <taken_at_ms>", PX lease_ttl: the
//                                 instance that watches the mailbox, since when
//
// Every command is one EVAL (Redis runs a script atomically): a heartbeat
// writes the membership and returns the live members; take, renew and
// release act on many leases at once, renewal and release only where the key
// still holds the caller's value (compare-and-set), so an instance never
// extends or removes another instance's lease.
#pragma once

#include "cluster/lease.hpp"
#include "redis/resp/reply.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mailroom::cluster {

struct keys {
  std::string prefix;  // "<ns>:cluster:"
  std::string members() const { return prefix + "members"; }
  std::string instance(const std::string& id) const { return prefix + "instance:" + id; }
  std::string lease(const std::string& mailbox_label) const {
    return prefix + "lease:" + mailbox_label;
  }
};

// The value a lease key holds: "<instance id> <taken_at_ms>".
std::string lease_value(const std::string& instance_id, std::int64_t taken_at_ms);
struct lease_holder {
  std::string instance_id;
  std::int64_t taken_at_ms = 0;
};
std::optional<lease_holder> parse_lease_value(const std::string& value);

// EVAL heartbeat: refreshes this instance's membership and record, drops
// members whose membership expired, returns the live members.
std::vector<std::string> heartbeat_command(const keys& k, const std::string& id,
                                           std::chrono::milliseconds ttl,
                                           const std::string& instance_json);
// The live members, or nullopt for a reply that is not an array of strings.
std::optional<std::vector<std::string>> parse_members(const redis::reply& r);

// EVAL take / renew / release over `leases` (key, value) pairs; the reply is
// one integer per lease, 1 done or 0 not ours.
struct lease_ref {
  std::string key;
  std::string value;
};
std::vector<std::string> take_command(const std::vector<lease_ref>& leases,
                                      std::chrono::milliseconds ttl);
std::vector<std::string> renew_command(const std::vector<lease_ref>& leases,
                                       std::chrono::milliseconds ttl);
std::vector<std::string> release_command(const std::vector<lease_ref>& leases);
// One lease_reply per lease: done / not_ours from the integers; all
// unavailable when the reply is an error or of the wrong shape or length.
std::vector<lease_reply> parse_lease_replies(const redis::reply& r, std::size_t n);

}  // namespace mailroom::cluster
