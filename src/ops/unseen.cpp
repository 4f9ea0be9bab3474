// `unseen` and `peek`: listing commands. They EXAMINE the folder (read-only,
// RFC 3501 §6.3.2) and fetch with BODY.PEEK, so no flag can change.
#include "ops/common.hpp"
#include "ops/output.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <iostream>

#include <ostream>

namespace mailroom::ops {

namespace asio = boost::asio;

namespace {

asio::awaitable<int> unseen(asio::any_io_executor ex, const config::mailbox& mb,
                            const message_filter& filter, const invocation& inv) {
  auto& out = *inv.out;
  imap::client c(ex, mb, client_options_for(ex, mb));
  std::string detail;
  if (!co_await open_mailbox(c, mb, true, detail)) {
    *inv.err << "mailroom: " << detail << "\n";
    co_return exit_failure;
  }
  const std::string criteria = "UNSEEN";
  auto found = co_await search(c, mb, criteria, detail);
  if (!found) {
    *inv.err << "mailroom: " << detail << "\n";
    co_return exit_failure;
  }
  std::vector<std::uint32_t> uids;
  for (auto uid : *found) {
    if (filter.uid_matches(uid)) uids.push_back(uid);
  }
  const std::int64_t now = now_seconds();
  message_listing listing(out, inv.json, now);
  listing.header();
  const std::function<void(listed_message &&)> print = [&](listed_message&& m) {
    if (filter.matches(m.view, now)) listing.row(m);
  };
  const bool ok = co_await fetch_messages(c, mb, uids, print, detail);
  listing.footer();
  co_await c.logout();
  if (!ok) {
    *inv.err << "mailroom: " << detail << "\n";
    co_return exit_failure;
  }
  if (!inv.json) {
    *inv.err << fmt::format("{}: {} of {} unseen message(s) shown\n", mb.label(), listing.rows(),
                            found->size());
  }
  co_return exit_ok;
}

asio::awaitable<int> peek(asio::any_io_executor ex, const config::mailbox& mb,
                          const invocation& inv) {
  auto& out = *inv.out;
  imap::client c(ex, mb, client_options_for(ex, mb));
  std::string detail;
  if (!co_await open_mailbox(c, mb, true, detail)) {
    *inv.err << "mailroom: " << detail << "\n";
    co_return exit_failure;
  }
  // BODY.PEEK[HEADER] / BODY.PEEK[]: the whole header or message, \Seen untouched.
  const std::string section = inv.body ? "BODY.PEEK[]" : "BODY.PEEK[HEADER]";
  std::optional<imap::message_summary> got;
  const imap::client::summary_handler keep = [&](imap::message_summary&& s) {
    // The first answer is the one we asked for (flag updates lack the size
    // and are filtered out by the client).
    if (s.uid && *s.uid == inv.uid && !got) got = std::move(s);
  };
  const std::vector<std::uint32_t> uids{inv.uid};
  auto ec = co_await c.uid_fetch_summaries(uids, section, keep);
  co_await c.logout();
  if (ec) {
    *inv.err << "mailroom: " << imap_failure(mb, c, "UID FETCH", ec) << "\n";
    co_return exit_failure;
  }
  if (!got) {
    *inv.err << fmt::format("mailroom: mailbox {}: no message with UID {}\n", mb.label(), inv.uid);
    co_return exit_failure;
  }
  const std::string& raw = inv.body ? got->body.value_or(std::string()) : got->header;
  if (inv.json) {
    listed_message m;
    m.view.uid = inv.uid;
    m.view.internal_date = got->internal_date;
    m.view.headers = decode_headers(raw);
    if (got->flags) m.flags = *got->flags;
    m.size = got->size.value_or(0);
    auto j = message_json(m, now_seconds());
    j[inv.body ? "message" : "header"] = raw;
    out << dump(j, 2) << "\n";
  } else {
    // Raw bytes, as stored: the operator sees exactly what would be delivered.
    // On a terminal, control characters other than tab and line ends become
    // spaces, so a hostile message cannot drive the terminal with escapes.
    if (::isatty(STDOUT_FILENO) && inv.out == &std::cout) {
      std::string shown = raw;
      for (char& ch : shown) {
        const auto u = static_cast<unsigned char>(ch);
        if ((u < 0x20 && ch != '\t' && ch != '\r' && ch != '\n') || u == 0x7f) ch = ' ';
      }
      out << shown;
    } else {
      out << raw;
    }
    if (!raw.empty() && raw.back() != '\n') out << "\n";
  }
  out.flush();
  co_return exit_ok;
}

}  // namespace

int run_unseen(const config::config& cfg, const invocation& inv) {
  std::string error;
  const auto* mb = select_one_mailbox(cfg, inv.mailbox, error);
  auto filter = message_filter::compile(inv.filter, error);
  if (!mb || !filter) {
    *inv.err << "mailroom unseen: " << error << "\n";
    return exit_usage;
  }
  return run_on_loop([&](asio::any_io_executor ex) { return unseen(ex, *mb, *filter, inv); },
                     *inv.err);
}

int run_peek(const config::config& cfg, const invocation& inv) {
  std::string error;
  const auto* mb = select_one_mailbox(cfg, inv.mailbox, error);
  if (mb && inv.uid == 0) error = "UID must be a positive number (RFC 3501 §2.3.1.1)";
  if (!mb || inv.uid == 0) {
    *inv.err << "mailroom peek: " << error << "\n";
    return exit_usage;
  }
  return run_on_loop([&](asio::any_io_executor ex) { return peek(ex, *mb, inv); }, *inv.err);
}

}  // namespace mailroom::ops
