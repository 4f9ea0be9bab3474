// What the operator commands share: choosing the mailbox, running a coroutine
// on a private event loop, opening the IMAP session, and fetching the header
// fields the filters and listings need.
#pragma once

#include "config/model.hpp"
#include "delivery/http_client.hpp"
#include "imap/client.hpp"
#include "ops/filter.hpp"
#include "ops/ops.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mailroom::ops {

// The mailboxes --mailbox names: "email/folder", or an email or folder name
// that is unique in the config. Empty `name`: all of them. Empty result with
// `error` set: no match or ambiguous (a usage error).
std::vector<const config::mailbox*> select_mailboxes(const config::config& cfg,
                                                     const std::string& name, std::string& error);
// Exactly one mailbox: --mailbox, or the only one configured.
const config::mailbox* select_one_mailbox(const config::config& cfg, const std::string& name,
                                          std::string& error);

// What a destructive command (mark-seen, expunge, reingest) works on: one
// mailbox and a compiled filter that chooses something (a filter, --uid or
// --all). On a usage error, prints "mailroom <command>: <why>" and returns
// nullopt (exit code 2).
struct destructive_target {
  const config::mailbox* mailbox = nullptr;
  message_filter filter;
};
std::optional<destructive_target> choose_destructive_target(const config::config& cfg,
                                                            const invocation& inv,
                                                            const char* command);

// Runs `start()` (which returns the command's coroutine) on a new io_context
// and returns its result; an escaped exception is a failure.
template <typename Start>
int run_on_loop(Start start, std::ostream& err);

// Seconds since the epoch.
std::int64_t now_seconds();

// A message as listed: filter view plus flags and size.
struct listed_message {
  message_view view;
  std::vector<std::string> flags;
  std::uint64_t size = 0;
};

// The header fields fetched for listings and filters.
extern const char* const header_section;

// The HTTP client of the operator commands (token requests, Graph calls):
// one for the life of the process.
std::shared_ptr<delivery::http_client> ops_http_client();

// The IMAP client options for `mb`: with auth_method xoauth2 / oauthbearer, a
// token source for its OAuth2 credentials (one per process and credentials).
imap::client_options client_options_for(boost::asio::any_io_executor ex, const config::mailbox& mb);

// connect, LOGIN, then EXAMINE (read_only) or SELECT. On failure `detail`
// says what failed, naming the mailbox and the cause (never a secret).
boost::asio::awaitable<bool> open_mailbox(imap::client& c, const config::mailbox& mb,
                                          bool read_only, std::string& detail);

// UID SEARCH <criteria>; on failure `detail` is set and nullopt returned.
boost::asio::awaitable<std::optional<std::vector<std::uint32_t>>> search(
    imap::client& c, const config::mailbox& mb, const std::string& criteria, std::string& detail);

// Fetches and decodes the headers of `uids` (PEEK: no flag changes), calling
// `on_message` per message in server order. False with `detail` on failure.
boost::asio::awaitable<bool> fetch_messages(imap::client& c, const config::mailbox& mb,
                                            const std::vector<std::uint32_t>& uids,
                                            const std::function<void(listed_message&&)>& on_message,
                                            std::string& detail);

// The candidates of a destructive command: `found` (from a search) narrowed by
// the filter, fetching headers only when the filter needs them.
boost::asio::awaitable<std::optional<std::vector<listed_message>>> select_messages(
    imap::client& c, const config::mailbox& mb, const std::vector<std::uint32_t>& found,
    const message_filter& filter, bool want_headers, std::string& detail);

// "mailbox <label>: <what>: <cause>" for an IMAP failure.
std::string imap_failure(const config::mailbox& mb, const imap::client& c, const char* what,
                         const boost::system::error_code& ec);

// ------------------------------------------------------------------ template
template <typename Start>
int run_on_loop(Start start, std::ostream& err) {
  boost::asio::io_context ioc(1);
  int rc = exit_failure;
  std::exception_ptr failure;
  boost::asio::co_spawn(ioc, start(ioc.get_executor()), [&](std::exception_ptr e, int result) {
    failure = e;
    rc = result;
  });
  ioc.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      err << "mailroom: internal error: " << e.what() << "\n";
    }
    return exit_failure;
  }
  return rc;
}

}  // namespace mailroom::ops
