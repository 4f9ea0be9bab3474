// The JWT that mail_room's postback delivery sends (lib/mail_room/jwt.rb) and
// GitLab verifies (lib/gitlab/mail_room/authenticator.rb): HS256 over
// {"nonce":"<24 hex>","iat":<seconds>,"iss":"<issuer>"}.
#pragma once

#include <boost/system/result.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace mailroom::delivery {

// Reads the secret file, which holds base64 text (GitLab generates it with
// SecureRandom.base64(32)): one trailing "\n", "\r\n" or "\r" is removed (Ruby's
// chomp), then the rest is decoded strictly (Base64.strict_decode64: no
// whitespace, padding required, unused bits zero). Errors (all
// errc::misconfigured, explained in `error_detail`): unreadable file, not
// base64, empty key. The detail names the path but never the file's content.
boost::system::result<std::string> load_jwt_key(const std::string& path, std::string& error_detail);

// Compact JWS: base64url('{"alg":"HS256"}') "." base64url(payload) "." base64url(HMAC-SHA256),
// without padding; payload {"nonce":"<nonce>","iat":<iat>,"iss":"<issuer>"} in
// that order, as ruby-jwt encodes mail_room's claims hash.
std::string make_jwt(std::string_view key, std::string_view issuer, std::int64_t iat,
                     std::string_view nonce);

// RFC 4648 base64 (with padding) and base64url (without), used for the JWT and
// for HTTP Basic auth.
std::string base64_encode(std::string_view data);
std::string base64url_encode(std::string_view data);

}  // namespace mailroom::delivery
