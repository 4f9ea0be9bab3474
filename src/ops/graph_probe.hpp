// What `check` and `status` learn about a Microsoft Graph inbox: whether the
// app gets a token, whether Graph lists the folder, how much unread mail it
// holds and since when. Read-only: nothing is fetched or marked.
#pragma once

#include "config/model.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace mailroom::ops {

struct graph_report {
  bool ok = false;
  // On failure: "token" (the token endpoint refused or did not answer) or
  // "folder" (Graph refused or failed the listing), and why.
  std::string failed_step;
  std::string error;
  std::size_t unread = 0;
  bool unread_capped = false;  // more than `max_listed` (the count is a lower bound)
  // The oldest unread message, when there is one.
  std::optional<std::string> oldest_received;  // ISO 8601, as Graph gives it
  std::optional<std::int64_t> oldest_age_seconds;
  std::string oldest_subject;
};

boost::asio::awaitable<graph_report> probe_graph(boost::asio::any_io_executor ex,
                                                 const config::mailbox& mb);

// "mailbox <label> is a Microsoft Graph inbox: ..." for the IMAP-only commands.
std::string imap_only_error(const config::mailbox& mb);

}  // namespace mailroom::ops
