// `mark-seen`: flag chosen unseen messages \Seen so that no instance delivers
// them (the runbook's "ignore this mail"). The message stays in the folder,
// readable for a later review or `reingest --unseen`.
#include "ops/common.hpp"
#include "ops/output.hpp"

#include <fmt/format.h>

#include <chrono>
#include <istream>
#include <ostream>

namespace mailroom::ops {

namespace asio = boost::asio;

namespace {

double elapsed(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Asks per message, as the runbook loop does; applies each "y" at once so an
// interrupted session keeps what was decided. Blocking on the terminal is
// fine here: this loop runs nothing else.
asio::awaitable<int> ask_each(imap::client& c, const config::mailbox& mb,
                              const std::vector<listed_message>& chosen, std::size_t unseen,
                              const invocation& inv) {
  auto& out = *inv.out;
  const std::int64_t now = now_seconds();
  std::size_t marked = 0;
  const std::string seen = "\\Seen";
  for (std::size_t i = 0; i < chosen.size(); ++i) {
    out << fmt::format("[{}/{}] {}\n", i + 1, chosen.size(), runbook_line(chosen[i], now));
    out << "Mark this message as seen? (y/N/q) " << std::flush;
    std::string answer;
    if (!std::getline(*inv.in, answer)) {
      out << "\n(end of input: stopping)\n";
      break;
    }
    if (inv.echo_answers) out << answer << "\n";
    if (answer == "q" || answer == "Q") break;
    if (answer != "y" && answer != "Y" && answer != "yes") continue;
    const std::vector<std::uint32_t> one{chosen[i].view.uid};
    if (auto ec = co_await c.uid_store_add_flags(one, seen)) {
      *inv.err << "mailroom: " << imap_failure(mb, c, "UID STORE", ec) << "\n";
      out << fmt::format("{}: marked {} message(s) seen before the failure\n", mb.label(), marked);
      co_return exit_failure;
    }
    ++marked;
  }
  out << fmt::format("{}: marked {} message(s) seen, left {} unseen ({} unseen before)\n",
                     mb.label(), marked, unseen - marked, unseen);
  co_return exit_ok;
}

asio::awaitable<int> mark_seen(asio::any_io_executor ex, const config::mailbox& mb,
                               const message_filter& filter, const invocation& inv) {
  auto& out = *inv.out;
  const auto t0 = std::chrono::steady_clock::now();
  imap::client c(ex, mb, client_options_for(ex, mb));
  std::string detail;
  // --dry-run changes nothing, so it needs no write access either.
  if (!co_await open_mailbox(c, mb, inv.dry_run, detail)) {
    *inv.err << "mailroom: " << detail << "\n";
    co_return exit_failure;
  }
  const std::string criteria = "UNSEEN";
  auto found = co_await search(c, mb, criteria, detail);
  std::optional<std::vector<listed_message>> chosen;
  if (found) {
    const bool show = inv.dry_run || inv.interactive;
    chosen = co_await select_messages(c, mb, *found, filter, show, detail);
  }
  if (!chosen) {
    *inv.err << "mailroom: " << detail << "\n";
    co_return exit_failure;
  }
  int rc = exit_ok;
  if (inv.interactive) {
    rc = co_await ask_each(c, mb, *chosen, found->size(), inv);
  } else if (inv.dry_run) {
    message_listing listing(out, inv.json, now_seconds());
    listing.header();
    for (const auto& m : *chosen) listing.row(m);
    listing.footer();
    *inv.err << fmt::format("{}: dry run: would mark {} of {} unseen message(s) seen\n", mb.label(),
                            chosen->size(), found->size());
  } else {
    std::vector<std::uint32_t> uids;
    uids.reserve(chosen->size());
    for (const auto& m : *chosen) uids.push_back(m.view.uid);
    const std::string seen = "\\Seen";
    if (auto ec = co_await c.uid_store_add_flags(uids, seen)) {
      *inv.err << "mailroom: " << imap_failure(mb, c, "UID STORE", ec) << "\n";
      rc = exit_failure;
    } else {
      const double took = elapsed(t0);
      out << fmt::format("{}: marked {} of {} unseen message(s) seen in {:.3f} s\n", mb.label(),
                         uids.size(), found->size(), took);
    }
  }
  co_await c.logout();
  co_return rc;
}

}  // namespace

int run_mark_seen(const config::config& cfg, const invocation& inv) {
  auto target = choose_destructive_target(cfg, inv, "mark-seen");
  if (!target) return exit_usage;
  return run_on_loop(
      [&](asio::any_io_executor ex) {
        return mark_seen(ex, *target->mailbox, target->filter, inv);
      },
      *inv.err);
}

}  // namespace mailroom::ops
