#include "auth/token_source.hpp"

#include "auth/token_endpoint.hpp"

#include <openssl/evp.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <utility>
#include <vector>

namespace mailroom::auth {

namespace asio = boost::asio;
using boost::system::error_code;

oauth2_token_source::oauth2_token_source(asio::any_io_executor ex, config::oauth2_options opts,
                                         std::shared_ptr<delivery::http_client> http, clock_fn now)
    : executor_(std::move(ex)),
      opts_(std::move(opts)),
      http_(std::move(http)),
      refresh_token_(opts_.refresh_token),
      now_(std::move(now)) {}

void oauth2_token_source::reject(std::uint64_t generation) {
  // Only the token that was refused: a newer one was fetched meanwhile.
  if (generation == generation_) renew_at_ = {};
}

asio::awaitable<boost::system::result<imap::token_source::token>> oauth2_token_source::get(
    std::string& error_detail, std::shared_ptr<wait_handle> wait) {
  if (generation_ != 0 && now_() < renew_at_) co_return token{token_, generation_};
  // One request at a time, whoever asks; it runs detached so that a caller
  // can give up waiting without cancelling it for the others.
  auto w = std::make_shared<waiter>(executor_);
  waiting_.push_back(w);
  if (!fetching_) {
    fetching_ = true;
    asio::co_spawn(executor_, fetch(shared_from_this()), asio::detached);
  }
  if (wait) {
    wait->cancel = [weak = std::weak_ptr<waiter>(w)] {
      if (auto p = weak.lock()) p->wake.cancel();
    };
  }
  error_code ec;
  co_await w->wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (wait) wait->cancel = nullptr;
  if (!w->answered) co_return make_error_code(asio::error::operation_aborted);
  if (last_error_) {
    error_detail = last_detail_;
    co_return last_error_;
  }
  co_return token{token_, generation_};
}

asio::awaitable<void> oauth2_token_source::fetch(std::shared_ptr<oauth2_token_source> self) {
  oauth2_token_source& s = *self;
  delivery::http_request req;
  req.method = "POST";
  req.url = s.opts_.token_url;
  req.headers = {{"Content-Type", "application/x-www-form-urlencoded"},
                 {"Accept", "application/json"}};
  const std::string body = token_request_body(s.opts_, s.refresh_token_.reveal());
  req.body = body;
  req.connect_timeout = std::chrono::seconds(10);
  req.total_timeout = std::chrono::seconds(30);
  std::string detail;
  auto response = co_await s.http_->perform(std::move(req), detail);
  s.last_error_ = {};
  s.last_detail_.clear();
  const std::string where = "token endpoint " + s.opts_.token_url + ": ";
  if (!response) {
    ++s.failures_;
    s.last_error_ = make_error_code(token_errc::unavailable);
    s.last_detail_ = where + detail;
  } else if (auto grant = parse_token_response(response->status, response->body, detail); !grant) {
    ++s.failures_;
    s.last_error_ = grant.error();
    s.last_detail_ = where + detail;
    if (grant.error() == token_errc::refused && !s.refresh_token_.empty())
      s.last_detail_ += "; the refresh token may have been revoked or expired";
  } else {
    s.token_ = secret(std::move(grant->access_token));
    if (!grant->refresh_token.empty()) s.refresh_token_ = secret(std::move(grant->refresh_token));
    ++s.generation_;
    ++s.renewals_;
    s.renew_at_ = s.now_() + renew_after(grant->expires_in);
  }
  s.fetching_ = false;
  for (auto& w : s.waiting_) {
    w->answered = true;
    w->wake.cancel();
  }
  s.waiting_.clear();
}

std::string credentials_key(const config::oauth2_options& o) {
  // The secrets enter the key only through a digest.
  const std::string material = o.token_url + '\0' + o.client_id + '\0' + o.client_secret.reveal() +
                               '\0' + o.refresh_token.reveal() + '\0' + o.scope;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(material.data(), material.size(), digest, &len, EVP_sha256(), nullptr);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 0xf];
  }
  return out;
}

}  // namespace mailroom::auth
