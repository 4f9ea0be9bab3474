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

std::string answer_excerpt(std::string_view body) {
  // A log line, not the page: printable ASCII, whitespace runs folded, at
  // most 200 characters.
  constexpr std::size_t max_chars = 200;
  std::string out;
  bool space = false;
  for (const char ch : body) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      space = !out.empty();
      continue;
    }
    if (out.size() >= max_chars) {
      out += "...";
      break;
    }
    if (space) out += ' ';
    space = false;
    out += (c >= 0x21 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  return out.empty() ? out : ": " + out;
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
  http_request req;
  if (options_.jwt_enabled()) {
    // The secret file is read on the HTTP pool, not on the event loop, and
    // for every message, so that a rotated secret applies at once.
    req.prepare = [path = options_.jwt_secret_path, issuer = options_.jwt_issuer,
                   header = options_.jwt_auth_header](
                      std::vector<std::pair<std::string, std::string>>& extra, std::string& error) {
      auto key = load_jwt_key(path, error);
      if (!key) return false;
      const auto iat = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
      extra.emplace_back(header, make_jwt(*key, issuer, iat, make_jid()));
      OPENSSL_cleanse(key->data(), key->size());
      return true;
    };
  }
  // The same key on every redelivery of this message (RFC draft
  // "The Idempotency-Key HTTP Header Field"), for receivers that dedupe.
  if (!m.id.empty()) headers.emplace_back("Idempotency-Key", m.id);
  headers.emplace_back("User-Agent", "mailroom/" MAILROOM_VERSION);

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
  if (status < 200 || status > 299) {
    // Not delivered: the watcher logs this detail (the status and the start
    // of the target's answer, which says why). 400, 413 and 422 say the
    // message itself is unacceptable (GitLab answers 400 for a message too
    // large), so a retry would get the same answer: it is set aside.
    // Everything else (401/403: credentials, 404: a wrong URL, 408/429/5xx:
    // a target in trouble) may heal and is retried.
    const bool for_good = status == 400 || status == 413 || status == 422;
    co_return result{make_error_code(for_good ? errc::refused : errc::rejected),
                     "HTTP " + std::to_string(status) + answer_excerpt(response->body)};
  }
  // mail_room logs this line for every answer; we only for a delivered message.
  logger_->info(log::fields{{"delivery_method", "Postback"},
                            {"action", "message pushed"},
                            {"url", url_for_log_},
                            {"status_code", status}});
  co_return result{};
}

}  // namespace mailroom::delivery
