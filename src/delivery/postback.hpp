// mail_room's default delivery (lib/mail_room/delivery/postback.rb): POST the
// raw message to a URL, GitLab's /api/v4/internal/mail_room/<mailbox_type>.
#pragma once

#include "common/logger.hpp"
#include "config/model.hpp"
#include "delivery/deliverer.hpp"
#include "delivery/http_client.hpp"

#include <memory>
#include <string>
#include <string_view>

namespace mailroom::delivery {

// Request: POST <url>, body = the message bytes exactly as fetched, headers
//   Content-Type: <content_type> (default application/x-www-form-urlencoded, as Faraday)
//   Authorization: Token <token>  or  Basic base64(user:pass)  (token wins)
//   <jwt_auth_header>: <HS256 JWT>  when jwt_enabled(); the secret file is
//                                   re-read for every message (on the HTTP pool,
//                                   never on the event loop) so that a rotated
//                                   secret applies
//   User-Agent: mailroom/<version>
// Unlike mail_room, which deletes the message whatever the answer, only 2xx
// counts as delivered: other statuses are errc::rejected ("HTTP <status>: <the
// start of the answer>"), transport failures target_unavailable / timed_out, an
// unusable JWT secret misconfigured. A delivered message is logged as mail_room
// logs every answer:
// {"delivery_method":"Postback","action":"message pushed","url":...,"status_code":...}
// with the URL's user info removed.
class postback_deliverer : public deliverer {
 public:
  postback_deliverer(const config::postback_options& options, http_client& client,
                     std::shared_ptr<log::logger> logger);

  const char* class_name() const override { return "MailRoom::Delivery::Postback"; }
  boost::asio::awaitable<result> deliver(const mail_message& m) override;

 private:
  config::postback_options options_;
  http_client& client_;
  std::shared_ptr<log::logger> logger_;
  std::string url_for_log_;
};

// `url` without "user:password@" in its authority, for logs.
std::string url_without_userinfo(const std::string& url);

// ": <the start of an HTTP answer>" for a log line (printable ASCII, spaces
// folded, at most 200 characters), or "" for an empty answer.
std::string answer_excerpt(std::string_view body);

}  // namespace mailroom::delivery
