#include "cluster/assignment.hpp"

#include <algorithm>
#include <numeric>

namespace mailroom::cluster {

namespace {

std::uint64_t mix(std::uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

std::uint64_t stable_hash(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return mix(h);
}

std::vector<std::size_t> assign(const std::vector<std::string>& mailboxes,
                                const std::vector<std::string>& instances) {
  std::vector<std::size_t> owner(mailboxes.size(), no_instance);
  // Distinct instances, identified by name; ties in weight break by name.
  std::vector<std::size_t> live;
  for (std::size_t i = 0; i < instances.size(); ++i) {
    const bool seen = std::any_of(live.begin(), live.end(),
                                  [&](std::size_t j) { return instances[j] == instances[i]; });
    if (!seen) live.push_back(i);
  }
  if (live.empty() || mailboxes.empty()) return owner;
  std::vector<std::uint64_t> instance_hash(instances.size());
  for (std::size_t i : live) instance_hash[i] = stable_hash(instances[i]);

  // Mailboxes in the order of their hash (then name): the same order on
  // every instance whatever the configuration's order.
  std::vector<std::size_t> order(mailboxes.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::vector<std::uint64_t> mailbox_hash(mailboxes.size());
  for (std::size_t m = 0; m < mailboxes.size(); ++m) mailbox_hash[m] = stable_hash(mailboxes[m]);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    if (mailbox_hash[a] != mailbox_hash[b]) return mailbox_hash[a] < mailbox_hash[b];
    return mailboxes[a] < mailboxes[b];
  });

  // Room: floor(M/N) each, and `extra` of them may take one more.
  const std::size_t n = live.size();
  const std::size_t floor_share = mailboxes.size() / n;
  std::size_t extra = mailboxes.size() % n;
  std::vector<std::size_t> load(instances.size(), 0);
  std::vector<std::size_t> ranked(live);
  for (std::size_t m : order) {
    auto weight = [&](std::size_t i) { return mix(mailbox_hash[m] ^ instance_hash[i]); };
    std::sort(ranked.begin(), ranked.end(), [&](std::size_t a, std::size_t b) {
      const auto wa = weight(a), wb = weight(b);
      if (wa != wb) return wa > wb;
      return instances[a] < instances[b];
    });
    for (std::size_t i : ranked) {
      if (load[i] < floor_share) {
        ++load[i];
        owner[m] = i;
        break;
      }
      if (load[i] == floor_share && extra > 0) {
        ++load[i];
        --extra;
        owner[m] = i;
        break;
      }
    }
  }
  return owner;
}

}  // namespace mailroom::cluster
