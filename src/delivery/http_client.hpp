// A small HTTP client over libcurl for the postback delivery.
//
// libcurl brings what Faraday/Net::HTTP gave mail_room: proxies from the
// environment (http_proxy, https_proxy/HTTPS_PROXY, all_proxy, no_proxy/NO_PROXY;
// note that curl ignores upper-case HTTP_PROXY), TLS verification, and
// connect/total timeouts. curl's easy interface blocks, and the service runs
// one event loop that must never block, so each request runs on a small pool
// owned by the client and completes back on the awaiting coroutine's executor.
// Like mail_room's Faraday/Net::HTTP: HTTP/1.1, a new connection per request,
// redirects not followed.
#pragma once

#include "config/model.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/system/result.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mailroom::delivery {

struct http_response {
  long status = 0;
  std::string body;        // at most the request's max_response_body bytes
  bool truncated = false;  // the answer was longer: the rest was not read
  // The response headers the request asked for (capture_headers), as
  // received, names in the request's spelling; a header sent twice keeps
  // its last value.
  std::vector<std::pair<std::string, std::string>> headers;
  static constexpr std::size_t max_body_size = 64 * 1024;  // the default limit
  const std::string* header(std::string_view name) const;
};

struct http_request {
  std::string method = "POST";
  std::string url;
  // Sent as given, after curl's own (Host, Accept: */*). A name given here
  // replaces curl's header of that name. Names and values must not contain CR,
  // LF or NUL (refused as errc::misconfigured).
  std::vector<std::pair<std::string, std::string>> headers;
  std::string_view body;  // the caller keeps it alive until perform() completes
  // The answer's body is read up to this size; a longer one is cut there
  // (http_response::truncated) and the transfer stopped.
  std::size_t max_response_body = http_response::max_body_size;
  // Response headers to keep (case-insensitive names), e.g. Retry-After.
  std::vector<std::string> capture_headers;
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds total_timeout{60000};  // the whole exchange, connect included
  // verify_peer, ca_file and ca_path apply to https URLs; `enabled` is not
  // consulted: the URL's scheme decides.
  config::tls_options tls;
  // Runs on the pool just before the request is sent, so it may block (the
  // postback reads its JWT secret file here, off the event loop). It may add
  // headers; false (with a reason in `error`) fails the request as
  // errc::misconfigured without sending it.
  std::function<bool(std::vector<std::pair<std::string, std::string>>& headers, std::string& error)>
      prepare;
};

class http_client {
 public:
  explicit http_client(std::size_t threads = 4);
  // Aborts requests in flight (within about a second: curl polls its progress
  // callback) and joins the pool. Destroy the client before the io_context of
  // the coroutines that await it.
  ~http_client();
  http_client(const http_client&) = delete;
  http_client& operator=(const http_client&) = delete;

  // Aborts the requests in flight (within about a second) and refuses new
  // ones: for a shutdown that has nothing left to deliver.
  void abort_all() { stopping_.store(true, std::memory_order_relaxed); }

  // Performs `req` on the pool and resumes the caller on its own executor.
  // Any HTTP answer, whatever its status, is a response. Errors are in the
  // delivery category:
  //   timed_out          connect or total timeout
  //   target_unavailable refused, reset, DNS, proxy, TLS handshake/verification
  //   misconfigured      malformed URL, unsupported scheme, unreadable CA file, bad header
  // with curl's error text in `error_detail`; it names hosts but never the
  // URL's user info or any header value.
  boost::asio::awaitable<boost::system::result<http_response>> perform(http_request req,
                                                                       std::string& error_detail);

 private:
  struct outcome;
  // The coroutine that co_spawn runs on the pool. A named member rather than a
  // lambda with captures: g++ 12 mis-destroys the captures of a lambda
  // coroutine passed to co_spawn.
  boost::asio::awaitable<outcome> run_on_pool(http_request req);
  outcome run(const http_request& req);

  std::atomic<bool> stopping_{false};
  boost::asio::thread_pool pool_;
};

}  // namespace mailroom::delivery
