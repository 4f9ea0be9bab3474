// cluster::assign: every instance computes the same, balanced assignment.
#include "cluster/assignment.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace mailroom::cluster {
namespace {

std::vector<std::string> names(const std::string& prefix, int n) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i) v.push_back(prefix + std::to_string(i));
  return v;
}

// mailbox -> instance name
std::map<std::string, std::string> owners(const std::vector<std::string>& mailboxes,
                                          const std::vector<std::string>& instances) {
  const auto a = assign(mailboxes, instances);
  std::map<std::string, std::string> out;
  for (std::size_t m = 0; m < mailboxes.size(); ++m) {
    EXPECT_NE(a[m], no_instance) << mailboxes[m];
    if (a[m] != no_instance) out[mailboxes[m]] = instances[a[m]];
  }
  return out;
}

std::map<std::string, int> loads(const std::map<std::string, std::string>& o) {
  std::map<std::string, int> l;
  for (const auto& [m, i] : o) ++l[i];
  return l;
}

TEST(Assignment, StableHashIsFixed) {
  // Part of the protocol between versions: these values must never change.
  EXPECT_EQ(stable_hash(""), 0xf52a15e9a9b5e89bULL) << std::hex << stable_hash("");
  EXPECT_EQ(stable_hash("mailroom"), 0xfefd610350270d80ULL) << std::hex << stable_hash("mailroom");
  EXPECT_NE(stable_hash("a"), stable_hash("b"));
}

TEST(Assignment, ThirtyMailboxesOnThreeInstancesAreTenEach) {
  const auto o = owners(names("user@example.org/INBOX#", 30), {"i-a", "i-b", "i-c"});
  ASSERT_EQ(o.size(), 30u);
  for (const auto& [i, n] : loads(o)) EXPECT_EQ(n, 10) << i;
}

TEST(Assignment, EveryInstanceGetsFloorOrCeil) {
  for (int m : {0, 1, 7, 30, 31, 100, 1001}) {
    for (int n : {1, 2, 3, 4, 7}) {
      const auto mailboxes = names("mb", m);
      const auto instances = names("inst", n);
      const auto l = loads(owners(mailboxes, instances));
      int total = 0;
      for (const auto& [i, c] : l) {
        EXPECT_GE(c, m / n) << m << "/" << n << " " << i;
        EXPECT_LE(c, (m + n - 1) / n) << m << "/" << n << " " << i;
        total += c;
      }
      EXPECT_EQ(total, m);
    }
  }
}

TEST(Assignment, OrderOfEitherListDoesNotMatter) {
  auto mailboxes = names("mb", 50);
  auto instances = names("inst", 4);
  const auto before = owners(mailboxes, instances);
  std::mt19937 rng(7);
  for (int round = 0; round < 5; ++round) {
    std::shuffle(mailboxes.begin(), mailboxes.end(), rng);
    std::shuffle(instances.begin(), instances.end(), rng);
    EXPECT_EQ(owners(mailboxes, instances), before);
  }
}

TEST(Assignment, AJoiningInstanceMovesFewMailboxes) {
  const auto mailboxes = names("mb", 300);
  const auto three = owners(mailboxes, {"a", "b", "c"});
  const auto four = owners(mailboxes, {"a", "b", "c", "d"});
  int moved = 0, to_new = 0;
  for (const auto& [m, i] : four) {
    if (three.at(m) != i) ++moved;
    if (i == "d") ++to_new;
  }
  EXPECT_EQ(to_new, 75);
  // The 75 the new instance takes must move; a perfect scheme moves only
  // those. Bounded load moves some more to keep the others even.
  EXPECT_LE(moved, 75 * 2) << moved;
}

TEST(Assignment, ALeavingInstanceOnlyMovesItsOwnAndAFew) {
  const auto mailboxes = names("mb", 300);
  const auto four = owners(mailboxes, {"a", "b", "c", "d"});
  const auto three = owners(mailboxes, {"a", "b", "c"});
  int moved_from_others = 0;
  for (const auto& [m, i] : three) {
    if (four.at(m) != "d" && four.at(m) != i) ++moved_from_others;
  }
  EXPECT_LE(moved_from_others, 75) << moved_from_others;
}

TEST(Assignment, NoInstanceNoOwnerAndDuplicatesCountOnce) {
  const auto a = assign(names("mb", 3), {});
  EXPECT_EQ(a, (std::vector<std::size_t>{no_instance, no_instance, no_instance}));
  const auto l = loads(owners(names("mb", 10), {"x", "y", "x"}));
  EXPECT_EQ(l.size(), 2u);
  EXPECT_EQ(l.at("x") + l.at("y"), 10);
  EXPECT_EQ(l.at("x"), 5);
}

}  // namespace
}  // namespace mailroom::cluster
