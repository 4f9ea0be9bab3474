// The operator commands (`mailroom <command> -c FILE ...`): inspect a mailbox
// and fix it by hand, replacing the Ruby console sessions of GitLab's runbook
// (docs/operations.md). Each command runs its own short-lived event loop with
// one IMAP connection; none of them touches a running service's state except
// through IMAP flags and Redis keys, as documented per command.
#pragma once

#include "config/model.hpp"
#include "ops/filter.hpp"

#include <cstdint>
#include <iosfwd>
#include <string>

namespace mailroom::ops {

// Exit codes shared by every command.
inline constexpr int exit_ok = 0;
inline constexpr int exit_failure = 1;
inline constexpr int exit_usage = 2;

struct invocation {
  std::string mailbox;  // --mailbox: "email/folder", the email or the folder name
  filter_spec filter;
  bool json = false;
  bool all = false;          // --all: no filter, every candidate message
  bool dry_run = false;      // mark-seen, expunge, reingest
  bool interactive = false;  // mark-seen
  bool body = false;         // peek --body
  bool unseen = false;       // reingest --unseen: also clear \Seen
  bool force = false;        // reingest --force: also clear in-flight claims
  bool cluster = false;      // status --cluster: the cluster's instances and their mailboxes
  std::uint32_t uid = 0;     // peek UID

  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  std::istream* in = nullptr;  // answers for --interactive
  bool echo_answers = false;   // `in` is not a terminal: repeat each answer on `out`
};

int run_check(const config::config& cfg, const invocation& inv);
int run_status(const config::config& cfg, const invocation& inv);
int run_unseen(const config::config& cfg, const invocation& inv);
int run_peek(const config::config& cfg, const invocation& inv);
int run_mark_seen(const config::config& cfg, const invocation& inv);
int run_expunge(const config::config& cfg, const invocation& inv);
int run_reingest(const config::config& cfg, const invocation& inv);

}  // namespace mailroom::ops
