// The imap::client methods only the operator commands (src/ops) use; kept out
// of client.cpp so the service's hot path stays small.
#include "imap/client.hpp"
#include "imap/proto/command_writer.hpp"
#include "imap/proto/decode.hpp"

#include <algorithm>

namespace mailroom::imap {

namespace asio = boost::asio;
using boost::system::error_code;

asio::awaitable<error_code> client::examine(const std::string& folder) {
  const std::string verb = "EXAMINE";
  co_return co_await open_folder(verb, folder);
}

asio::awaitable<error_code> client::uid_fetch_summaries(const std::vector<std::uint32_t>& uids,
                                                        const std::string& section,
                                                        const summary_handler& on_message) {
  // RFC 3501 §5.5: a client may send several commands without waiting for
  // each result. FETCHes do not conflict, so several UID sets are in flight at
  // once and a long, scattered UID list costs a few round trips instead of one
  // per set. At most `window` are outstanding: a server whose output we are
  // not reading stops reading our commands, and we must never block on that.
  constexpr std::size_t window = 8;
  const std::string items = "(UID FLAGS INTERNALDATE RFC822.SIZE " + section + ")";
  const auto sets = format_uid_sets(uids, opts_.uid_set_max_chars);
  std::vector<std::uint32_t> wanted(uids);
  std::sort(wanted.begin(), wanted.end());
  std::vector<std::string> outstanding;
  std::size_t next = 0;
  std::string failure;
  while (next < sets.size() || !outstanding.empty()) {
    if (next < sets.size() && outstanding.size() < window) {
      while (next < sets.size() && outstanding.size() < window) {
        command_builder cmd("UID FETCH");
        cmd.atom(sets[next++]).atom(items);
        outstanding.push_back(session_.submit(cmd));
      }
      if (auto ec = co_await flush()) co_return ec;
    }
    auto ev = co_await next_event(opts_.command_timeout);
    if (!ev) co_return ev.error();
    if (ev->k == session::event::kind::untagged) {
      note_untagged(ev->resp);
      if (ev->resp.keyword != "FETCH") continue;
      auto item = decode_message_summary(std::move(ev->resp));
      // Flag updates from other sessions are FETCH responses too (with a UID
      // during UID commands): only an answer carries the RFC822.SIZE we asked
      // for, and only for a UID we asked about.
      if (item && item->uid && item->size &&
          std::binary_search(wanted.begin(), wanted.end(), *item->uid))
        on_message(std::move(*item));
      continue;
    }
    if (ev->k != session::event::kind::tagged) continue;
    auto it = std::find(outstanding.begin(), outstanding.end(), ev->resp.tag);
    if (it == outstanding.end()) continue;
    outstanding.erase(it);
    if (ev->resp.st != status::ok && failure.empty()) failure = ev->resp.text;
  }
  if (!failure.empty()) co_return fail(client_errc::command_failed, "UID FETCH: " + failure);
  co_return error_code{};
}

asio::awaitable<error_code> client::uid_store_remove_flags(const std::vector<std::uint32_t>& uids,
                                                           const std::string& flags) {
  const std::string op = "-FLAGS.SILENT";
  co_return co_await uid_store(uids, op, flags);
}

}  // namespace mailroom::imap
