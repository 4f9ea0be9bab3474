// `expunge`: remove the messages flagged \Deleted (the runbook's "Expunging
// Emails", which ran EXPUNGE from a Rails console at about 100 messages/s).
#include "ops/common.hpp"
#include "ops/output.hpp"

#include <fmt/format.h>

#include <algorithm>

#include <chrono>
#include <ostream>

namespace mailroom::ops {

namespace asio = boost::asio;

namespace {

asio::awaitable<int> expunge(asio::any_io_executor ex, const config::mailbox& mb,
                             const message_filter& filter, const invocation& inv) {
  auto& out = *inv.out;
  imap::client c(ex, mb, client_options_for(ex, mb));
  std::string detail;
  if (!co_await open_mailbox(c, mb, inv.dry_run, detail)) {
    *inv.err << "mailroom: " << detail << "\n";
    co_return exit_failure;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::string criteria = "DELETED";
  auto found = co_await search(c, mb, criteria, detail);
  std::optional<std::vector<listed_message>> chosen;
  if (found) chosen = co_await select_messages(c, mb, *found, filter, inv.dry_run, detail);
  if (!chosen) {
    *inv.err << "mailroom: " << detail << "\n";
    co_return exit_failure;
  }
  const bool uidplus = c.has_capability("UIDPLUS");
  if (!uidplus && chosen->size() != found->size()) {
    // Plain EXPUNGE (RFC 3501 §6.4.3) removes every \Deleted message; it
    // cannot honour a filter.
    *inv.err << fmt::format(
        "mailroom: mailbox {}: the server lacks UIDPLUS (RFC 4315), so only all {} \\Deleted "
        "message(s) can be expunged together; run without filters\n",
        mb.label(), found->size());
    co_await c.logout();
    co_return exit_failure;
  }
  int rc = exit_ok;
  if (inv.dry_run) {
    message_listing listing(out, inv.json, now_seconds());
    listing.header();
    for (const auto& m : *chosen) listing.row(m);
    listing.footer();
    *inv.err << fmt::format("{}: dry run: would expunge {} of {} \\Deleted message(s)\n",
                            mb.label(), chosen->size(), found->size());
  } else if (chosen->empty()) {
    out << fmt::format("{}: nothing to expunge ({} \\Deleted message(s), none chosen)\n",
                       mb.label(), found->size());
  } else {
    std::vector<std::uint32_t> uids;
    uids.reserve(chosen->size());
    for (const auto& m : *chosen) uids.push_back(m.view.uid);
    std::optional<std::vector<std::uint32_t>> again;
    if (!uidplus) {
      // Plain EXPUNGE takes whatever is \Deleted at that moment: refuse if
      // another client flagged more since the list was made.
      again = co_await search(c, mb, criteria, detail);
      if (!again) {
        *inv.err << "mailroom: " << detail << "\n";
        co_await c.logout();
        co_return exit_failure;
      }
      std::sort(again->begin(), again->end());
      std::sort(uids.begin(), uids.end());
    }
    if (again && *again != uids) {
      *inv.err << fmt::format(
          "mailroom: mailbox {}: the \\Deleted messages changed while listing them ({} now, {} "
          "before) and the server lacks UIDPLUS; nothing expunged, run again\n",
          mb.label(), again->size(), uids.size());
      rc = exit_failure;
    } else if (auto ec = co_await c.expunge(uids)) {
      *inv.err << "mailroom: " << imap_failure(mb, c, "expunge", ec) << "\n";
      rc = exit_failure;
    } else {
      const double took =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      out << fmt::format("{}: expunged {} \\Deleted message(s) with {} in {:.3f} s ({:.0f}/s)\n",
                         mb.label(), uids.size(), uidplus ? "UID EXPUNGE" : "EXPUNGE", took,
                         took > 0 ? static_cast<double>(uids.size()) / took : 0.0);
    }
  }
  co_await c.logout();
  co_return rc;
}

}  // namespace

int run_expunge(const config::config& cfg, const invocation& inv) {
  auto target = choose_destructive_target(cfg, inv, "expunge");
  if (!target) return exit_usage;
  return run_on_loop(
      [&](asio::any_io_executor ex) { return expunge(ex, *target->mailbox, target->filter, inv); },
      *inv.err);
}

}  // namespace mailroom::ops
