// The OAuth2 access token of one set of credentials (token endpoint, client,
// refresh token, scope), shared by every mailbox that uses them: fetched
// before the first login, renewed before it runs out (auth::renew_after) and
// once after a server refused it, one request at a time however many
// sessions ask. A refresh token the endpoint rotates is used from then on.
// Nothing here logs or returns a token or a secret in an error.
#pragma once

#include "config/model.hpp"
#include "delivery/http_client.hpp"
#include "imap/client.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <string>

namespace mailroom::auth {

// Make it with std::make_shared: a request keeps its source alive.
class oauth2_token_source : public imap::token_source,
                            public std::enable_shared_from_this<oauth2_token_source> {
 public:
  using clock_fn = std::function<std::chrono::steady_clock::time_point()>;
  // `now` is the clock renewals are timed by (tests pass their own).
  oauth2_token_source(boost::asio::any_io_executor ex, config::oauth2_options opts,
                      std::shared_ptr<delivery::http_client> http,
                      clock_fn now = &std::chrono::steady_clock::now);

  // Waits for the token; the request itself runs on without the caller, so a
  // caller that is cancelled (a session closed at shutdown) returns at once
  // with operation_aborted.
  boost::asio::awaitable<boost::system::result<token>> get(
      std::string& error_detail, std::shared_ptr<wait_handle> wait) override;
  void reject(std::uint64_t generation) override;

  // For /metrics and tests: tokens obtained, and failed requests.
  std::uint64_t renewals() const override { return renewals_; }
  std::uint64_t failures() const override { return failures_; }

 private:
  struct waiter {
    explicit waiter(boost::asio::any_io_executor ex)
        : wake(ex, boost::asio::steady_timer::time_point::max()) {}
    boost::asio::steady_timer wake;
    bool answered = false;
  };
  static boost::asio::awaitable<void> fetch(std::shared_ptr<oauth2_token_source> self);

  boost::asio::any_io_executor executor_;
  config::oauth2_options opts_;
  std::shared_ptr<delivery::http_client> http_;
  secret refresh_token_;  // the configured one, or the endpoint's newer one
  secret token_;
  std::uint64_t generation_ = 0;  // of token_; 0: none yet
  clock_fn now_;
  std::chrono::steady_clock::time_point renew_at_{};
  // The outcome of the last request, for callers that waited on it.
  boost::system::error_code last_error_;
  std::string last_detail_;
  bool fetching_ = false;
  std::deque<std::shared_ptr<waiter>> waiting_;
  std::uint64_t renewals_ = 0;
  std::uint64_t failures_ = 0;
};

// One key per distinct set of credentials, for sharing a source.
std::string credentials_key(const config::oauth2_options& o);

}  // namespace mailroom::auth
