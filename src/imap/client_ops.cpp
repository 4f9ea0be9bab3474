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
  uidvalidity_ = 0;
  command_builder cmd("EXAMINE");
  cmd.mailbox(folder);
  auto r = co_await run(cmd);
  if (!r) co_return r.error();
  if (r->st != status::ok)
    co_return fail(client_errc::mailbox_missing, "EXAMINE " + folder + ": " + r->text);
  new_mail_hint_ = false;
  co_return error_code{};
}

asio::awaitable<error_code> client::uid_fetch_summaries(const std::vector<std::uint32_t>& uids,
                                                        const std::string& section,
                                                        const summary_handler& on_message) {
  // RFC 3501 §5.5: a client may send several commands without waiting for
  // each result. FETCHes do not conflict, so every UID set goes out at once
  // and a long, scattered UID list costs one round trip instead of one per set.
  const std::string items = "(UID FLAGS INTERNALDATE RFC822.SIZE " + section + ")";
  std::vector<std::string> tags;
  for (const auto& set : format_uid_sets(uids, opts_.uid_set_max_chars)) {
    command_builder cmd("UID FETCH");
    cmd.atom(set).atom(items);
    tags.push_back(session_.submit(cmd));
  }
  if (tags.empty()) co_return error_code{};
  if (auto ec = co_await flush()) co_return ec;
  std::size_t done = 0;
  std::string failure;
  while (done < tags.size()) {
    auto ev = co_await next_event(opts_.command_timeout);
    if (!ev) co_return ev.error();
    if (ev->k == session::event::kind::untagged) {
      note_untagged(ev->resp);
      if (ev->resp.keyword != "FETCH") continue;
      auto item = decode_message_summary(std::move(ev->resp));
      // FETCH responses without a UID are flag updates from other sessions.
      if (item && item->uid) on_message(std::move(*item));
      continue;
    }
    if (ev->k != session::event::kind::tagged) continue;
    if (std::find(tags.begin(), tags.end(), ev->resp.tag) == tags.end()) continue;
    ++done;
    if (ev->resp.st != status::ok && failure.empty()) failure = ev->resp.text;
  }
  if (!failure.empty()) co_return fail(client_errc::command_failed, "UID FETCH: " + failure);
  co_return error_code{};
}

asio::awaitable<error_code> client::uid_store_remove_flags(const std::vector<std::uint32_t>& uids,
                                                           const std::string& flags) {
  for (const auto& set : format_uid_sets(uids, opts_.uid_set_max_chars)) {
    command_builder cmd("UID STORE");
    cmd.atom(set).atom("-FLAGS.SILENT").atom("(" + flags + ")");
    auto r = co_await run(cmd);
    if (!r) co_return r.error();
    if (r->st != status::ok) co_return fail(client_errc::command_failed, "UID STORE: " + r->text);
  }
  co_return error_code{};
}

}  // namespace mailroom::imap
