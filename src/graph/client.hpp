// The calls a Graph inbox makes, over the HTTP client, with the access token
// of a token source: list the unread messages of one folder (every page),
// fetch a message's MIME, mark it read, delete it, tag it, move it. The URLs,
// the reading of the answers and what an error means are graph::api (no
// I/O); this layer adds the token (renewed once after a 401), the size
// limits of the answers and the request headers.
#pragma once

#include "delivery/http_client.hpp"
#include "graph/api.hpp"
#include "imap/client.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mailroom::graph {

struct client_options {
  std::string graph_endpoint;  // without a trailing slash
  std::string user;            // the mailbox's address (config `email`)
  std::string folder;          // a well-known name (inbox) or a folder id
  std::string token_url;       // where the tokens come from, for error texts
  config::tls_options tls;     // certificate checks of https endpoints
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds request_timeout{60000};  // one whole request
  std::size_t page_size = 100;                       // $top of the listing
  // Messages listed per pass at most (the next pass lists the rest).
  std::size_t max_listed = 10000;
  // A page of the listing larger than this is refused (bad_answer).
  std::size_t max_page_bytes = 4 * 1024 * 1024;
};

class client {
 public:
  client(std::shared_ptr<delivery::http_client> http, std::shared_ptr<imap::token_source> tokens,
         client_options opts);

  // The folder's unread messages, oldest first, up to max_listed.
  boost::asio::awaitable<boost::system::result<std::vector<listed_message>>> list_unread(
      failure& f);
  // The oldest unread message (nothing when there is none).
  boost::asio::awaitable<boost::system::result<std::optional<message_summary>>> oldest_unread(
      failure& f);
  // The raw MIME of a message. Larger than `max_size`: `too_large` is set and
  // the body is empty. A message gone meanwhile: graph_errc::not_found.
  boost::asio::awaitable<boost::system::result<std::string>> mime(const std::string& id,
                                                                  std::uint64_t max_size,
                                                                  bool& too_large, failure& f);
  boost::asio::awaitable<boost::system::error_code> mark_read(const std::string& id, failure& f);
  // DELETE: Graph moves the message to Deleted Items.
  boost::asio::awaitable<boost::system::error_code> remove(const std::string& id, failure& f);
  boost::asio::awaitable<boost::system::error_code> set_categories(
      const std::string& id, const std::vector<std::string>& categories, failure& f);
  // To a folder given by well-known name or id.
  boost::asio::awaitable<boost::system::error_code> move(const std::string& id,
                                                         const std::string& destination,
                                                         failure& f);

  // Ends a wait for a token (a shutdown need not wait for the token endpoint).
  void cancel();
  const client_options& options() const { return opts_; }

 private:
  struct call;
  // Sends `c` with a valid token; a 401 renews the token once. A non-2xx
  // answer or a transport error fills `f` and is returned as its error.
  boost::asio::awaitable<boost::system::result<delivery::http_response>> send(const call& c,
                                                                              failure& f);

  std::shared_ptr<delivery::http_client> http_;
  std::shared_ptr<imap::token_source> tokens_;
  client_options opts_;
  std::shared_ptr<imap::token_source::wait_handle> token_wait_ =
      std::make_shared<imap::token_source::wait_handle>();
};

}  // namespace mailroom::graph
