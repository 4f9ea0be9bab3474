#include "delivery/postback.hpp"

#include "delivery/errc.hpp"
#include "delivery/job.hpp"
#include "delivery/jwt.hpp"

#include <openssl/crypto.h>

#include <chrono>
#include <utility>
#include <vector>

#ifndef MAILROOM_VERSION
#define MAILROOM_VERSION "0.1.0"
#endif

namespace mailroom::delivery {

std::string url_without_userinfo(const std::string& url) {
  const std::size_t scheme_end = url.find("://");
  const std::size_t authority = scheme_end == std::string::npos ? 0 : scheme_end + 3;
  std::size_t authority_end = url.find_first_of("/?#", authority);
  if (authority_end == std::string::npos) authority_end = url.size();
  // The last '@' ends the user info: a password may itself contain '@'.
  const std::size_t at = url.rfind('@', authority_end == 0 ? 0 : authority_end - 1);
  if (at == std::string::npos || at < authority) return url;
  return url.substr(0, authority) + url.substr(at + 1);
}

postback_deliverer::postback_deliverer(const config::postback_options& options, http_client& client,
                                       std::shared_ptr<log::logger> logger)
    : options_(options),
      client_(client),
      logger_(logger ? std::move(logger) : log::logger::discard()),
      url_for_log_(url_without_userinfo(options.url)) {}

boost::asio::awaitable<result> postback_deliverer::deliver(const mail_message& m) {
  std::vector<std::pair<std::string, std::string>> headers;
  headers.reserve(4);
  headers.emplace_back("Content-Type", options_.content_type.empty()
                                           ? "application/x-www-form-urlencoded"
                                           : options_.content_type);
  if (!options_.token.empty()) {
    // Faraday 2's `request :authorization, 'Token', token`, which mail_room's spec asserts.
    headers.emplace_back("Authorization", "Token " + options_.token.reveal());
  } else if (!options_.username.empty() && !options_.password.empty()) {
    headers.emplace_back("Authorization", "Basic " + base64_encode(options_.username + ":" +
                                                                   options_.password.reveal()));
  }
  if (options_.jwt_enabled()) {
    std::string detail;
    // Blocking read of a tiny local file, like the logger's appends: acceptable
    // on the loop, and re-reading per message picks up a rotated secret.
    auto key = load_jwt_key(options_.jwt_secret_path, detail);
    if (!key) co_return result{key.error(), std::move(detail)};
    const auto iat = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    headers.emplace_back(options_.jwt_auth_header,
                         make_jwt(*key, options_.jwt_issuer, iat, make_jid()));
    OPENSSL_cleanse(key->data(), key->size());
  }
  // The same key on every redelivery of this message (RFC draft
  // "The Idempotency-Key HTTP Header Field"), for receivers that dedupe.
  if (!m.id.empty()) headers.emplace_back("Idempotency-Key", m.id);
  headers.emplace_back("User-Agent", "mailroom/" MAILROOM_VERSION);

  http_request req;
  req.method = "POST";
  req.url = options_.url;
  req.headers = std::move(headers);
  req.body = m.body;
  req.connect_timeout = options_.connect_timeout;
  req.total_timeout = options_.response_timeout;
  req.tls = options_.tls;

  std::string detail;
  auto response = co_await client_.perform(std::move(req), detail);
  if (!response) co_return result{response.error(), std::move(detail)};

  const long status = response->status;
  logger_->info(log::fields{{"delivery_method", "Postback"},
                            {"action", "message pushed"},
                            {"url", url_for_log_},
                            {"status_code", status}});
  if (status < 200 || status > 299) {
    co_return result{make_error_code(errc::rejected), "HTTP " + std::to_string(status)};
  }
  co_return result{};
}

}  // namespace mailroom::delivery
