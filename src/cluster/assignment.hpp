// Which live instance watches which mailbox (the `:cluster:` mode).
//
// Every instance computes the assignment from the same two lists (the live
// instances read from Redis, the configured mailboxes) and gets the same
// answer, so no instance hands out work: each takes what the assignment gives
// it, through a lease (cluster/lease.hpp). The lease, not the assignment,
// guarantees that one instance at a time watches a mailbox; two instances
// that briefly disagree (one saw a member leave before the other) only wait
// for a lease to be released.
//
// Rendezvous hashing (highest random weight) with bounded load: mailboxes are
// placed one by one, in the order of their own hash, each on the instance of
// highest weight hash(mailbox, instance) that still has room. Room: every
// instance ends with floor(M/N) or ceil(M/N) of the M mailboxes. When an
// instance joins or leaves, a mailbox moves only if its preferred instances
// changed or filled up, not all of them. No I/O.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mailroom::cluster {

// Part of the protocol between instances: instances of different versions in
// one cluster must compute the same weights, so this is a fixed function
// (FNV-1a 64, then splitmix64's finaliser), not std::hash.
std::uint64_t stable_hash(std::string_view s);

// For each of `mailboxes`, the index in `instances` of the instance that
// watches it. The order of either list does not matter (both are identified
// by their text); duplicate instance names count once (the first index).
// With no instance, every entry is npos.
inline constexpr std::size_t no_instance = static_cast<std::size_t>(-1);
std::vector<std::size_t> assign(const std::vector<std::string>& mailboxes,
                                const std::vector<std::string>& instances);

}  // namespace mailroom::cluster
