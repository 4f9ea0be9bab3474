#include "graph/client.hpp"

#include "auth/token_endpoint.hpp"
#include "delivery/errc.hpp"

#include <nlohmann/json.hpp>

namespace mailroom::graph {

namespace asio = boost::asio;
using boost::system::error_code;

// Each call is built as a named local before it is sent: g++ 12 mishandles
// braced temporaries that live across a co_await.
struct client::call {
  std::string method;
  std::string url;
  std::string body;  // JSON, or empty
  std::size_t max_response_body = delivery::http_response::max_body_size;
};

client::client(std::shared_ptr<delivery::http_client> http,
               std::shared_ptr<imap::token_source> tokens, client_options opts)
    : http_(std::move(http)), tokens_(std::move(tokens)), opts_(std::move(opts)) {}

void client::cancel() {
  if (token_wait_->cancel) token_wait_->cancel();
}

asio::awaitable<boost::system::result<delivery::http_response>> client::send(const call& c,
                                                                             failure& f) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::string detail;
    auto token = co_await tokens_->get(detail, token_wait_);
    if (!token) {
      f = {};
      if (token.error() == asio::error::operation_aborted) {
        f.ec = token.error();
        f.detail = "waiting for an access token: stopped";
      } else {
        // A refused client (wrong secret, unknown tenant) needs an operator.
        f.ec = token.error() == auth::token_errc::refused ? graph_errc::refused
                                                          : graph_errc::unavailable;
        f.detail = "access token from " + opts_.token_url + ": " + detail;
      }
      co_return f.ec;
    }
    delivery::http_request req;
    req.method = c.method;
    req.url = c.url;
    req.headers = {{"Authorization", "Bearer " + token->value.reveal()},
                   {"Prefer", std::string(prefer_immutable_ids)},
                   {"Accept", "application/json"}};
    if (!c.body.empty()) req.headers.emplace_back("Content-Type", "application/json");
    req.body = c.body;
    req.max_response_body = c.max_response_body;
    req.capture_headers = {"Retry-After"};
    req.connect_timeout = opts_.connect_timeout;
    req.total_timeout = opts_.request_timeout;
    req.tls = opts_.tls;
    std::string transport_detail;
    auto r = co_await http_->perform(std::move(req), transport_detail);
    if (!r) {
      f = {};
      // A URL or TLS setting that cannot work will not start working.
      f.ec = r.error() == delivery::errc::misconfigured ? graph_errc::refused
                                                        : graph_errc::unavailable;
      f.detail = c.method + " " + opts_.graph_endpoint + ": " + r.error().message() +
                 (transport_detail.empty() ? "" : " (" + transport_detail + ")");
      co_return f.ec;
    }
    if (r->status >= 200 && r->status < 300) co_return std::move(*r);
    const std::string* retry_after = r->header("Retry-After");
    f = classify(r->status, r->body, retry_after != nullptr ? *retry_after : std::string_view{});
    f.detail = c.method + " " + f.detail;
    // The token may have expired or been revoked since it was issued: once
    // more with a new one; a second refusal is the credentials'.
    if (f.ec == graph_errc::token_rejected && attempt == 0) {
      tokens_->reject(token->generation);
      continue;
    }
    co_return f.ec;
  }
  co_return f.ec;
}

asio::awaitable<boost::system::result<std::vector<listed_message>>> client::list_unread(
    failure& f) {
  std::vector<listed_message> out;
  std::string url = list_unread_url(opts_.graph_endpoint, opts_.user, opts_.folder,
                                    std::min(opts_.page_size, opts_.max_listed));
  while (!url.empty() && out.size() < opts_.max_listed) {
    const call c{"GET", url, {}, opts_.max_page_bytes};
    auto r = co_await send(c, f);
    if (!r) {
      // The folder (or the user) is missing: not a message gone meanwhile.
      if (f.ec == graph_errc::not_found) f.ec = graph_errc::refused;
      co_return f.ec;
    }
    if (r->truncated) {
      f = {make_error_code(graph_errc::bad_answer), std::chrono::seconds(0),
           "a page of messages larger than " + std::to_string(opts_.max_page_bytes) + " bytes"};
      co_return f.ec;
    }
    std::string detail;
    auto page = parse_message_page(r->body, opts_.graph_endpoint, detail);
    if (!page) {
      f = {page.error(), std::chrono::seconds(0), detail};
      co_return f.ec;
    }
    for (auto& m : page->messages) {
      if (out.size() >= opts_.max_listed) break;
      out.push_back(std::move(m));
    }
    url = std::move(page->next_link);
  }
  co_return out;
}

asio::awaitable<boost::system::result<std::optional<message_summary>>> client::oldest_unread(
    failure& f) {
  const call c{"GET", oldest_unread_url(opts_.graph_endpoint, opts_.user, opts_.folder), {}};
  auto r = co_await send(c, f);
  if (!r) {
    if (f.ec == graph_errc::not_found) f.ec = graph_errc::refused;
    co_return f.ec;
  }
  std::string detail;
  auto page = parse_oldest_unread(r->body, detail);
  if (!page) f = {page.error(), std::chrono::seconds(0), detail};
  co_return page;
}

asio::awaitable<boost::system::result<std::string>> client::mime(const std::string& id,
                                                                 std::uint64_t max_size,
                                                                 bool& too_large, failure& f) {
  too_large = false;
  // One byte more than allowed tells "too large" from "exactly the limit".
  const std::size_t limit =
      static_cast<std::size_t>(std::min<std::uint64_t>(max_size + 1, SIZE_MAX));
  const call c{"GET", message_value_url(opts_.graph_endpoint, opts_.user, id), {}, limit};
  auto r = co_await send(c, f);
  if (!r) co_return f.ec;
  if (r->truncated || r->body.size() > max_size) {
    too_large = true;
    co_return std::string{};
  }
  co_return std::move(r->body);
}

asio::awaitable<error_code> client::mark_read(const std::string& id, failure& f) {
  const call c{"PATCH", message_url(opts_.graph_endpoint, opts_.user, id),
               std::string(mark_read_body)};
  auto r = co_await send(c, f);
  co_return r ? error_code{} : r.error();
}

asio::awaitable<error_code> client::remove(const std::string& id, failure& f) {
  const call c{"DELETE", message_url(opts_.graph_endpoint, opts_.user, id), {}};
  auto r = co_await send(c, f);
  co_return r ? error_code{} : r.error();
}

asio::awaitable<error_code> client::set_categories(const std::string& id,
                                                   const std::vector<std::string>& categories,
                                                   failure& f) {
  const nlohmann::json body = {{"categories", categories}};
  const call c{"PATCH", message_url(opts_.graph_endpoint, opts_.user, id), body.dump()};
  auto r = co_await send(c, f);
  co_return r ? error_code{} : r.error();
}

asio::awaitable<error_code> client::move(const std::string& id, const std::string& destination,
                                         failure& f) {
  const nlohmann::json body = {{"destinationId", destination}};
  const call c{"POST", message_url(opts_.graph_endpoint, opts_.user, id) + "/move", body.dump()};
  auto r = co_await send(c, f);
  co_return r ? error_code{} : r.error();
}

}  // namespace mailroom::graph
