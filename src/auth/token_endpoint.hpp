// The OAuth2 token endpoint, without I/O: the request body and the reading of
// the answer (RFC 6749 §4.4 client credentials, §6 refresh token, §5.1/§5.2
// answers), and when to renew a token.
#pragma once

#include "config/model.hpp"

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <string>
#include <string_view>

namespace mailroom::auth {

enum class token_errc {
  refused = 1,  // permanent: the endpoint refused the credentials (invalid_grant: a revoked
                // or expired refresh token, invalid_client, unauthorized_client, ...)
  unavailable,  // retriable: no answer, 5xx, 429, or an answer that is not a token
};
const boost::system::error_category& token_category();
inline boost::system::error_code make_error_code(token_errc e) {
  return {static_cast<int>(e), token_category()};
}

// application/x-www-form-urlencoded body of the token request: the
// refresh-token grant when `refresh_token` is not empty, else client
// credentials; client_id and client_secret in the body (RFC 6749 §2.3.1,
// accepted by Google and Microsoft), scope when set.
std::string token_request_body(const config::oauth2_options& o, std::string_view refresh_token);

struct token_grant {
  std::string access_token;
  std::chrono::seconds expires_in{3600};  // RFC 6749 §5.1: RECOMMENDED; 1 h when absent
  std::string refresh_token;              // a new one when the endpoint rotates it
};

// The endpoint's answer. A 200 with an access_token is a grant; an OAuth2
// error answer (400/401 with "error") is token_errc::refused for errors a
// retry cannot cure, else unavailable. `detail` names the status and the
// error and its description, never a token.
boost::system::result<token_grant> parse_token_response(long http_status, std::string_view body,
                                                        std::string& detail);

// When a token obtained now, valid for `expires_in`, should be renewed: a
// tenth of its life before it runs out, at least 60 s before, but never
// sooner than half-way (short-lived tokens).
std::chrono::seconds renew_after(std::chrono::seconds expires_in);

}  // namespace mailroom::auth

template <>
struct boost::system::is_error_code_enum<mailroom::auth::token_errc> : std::true_type {};
