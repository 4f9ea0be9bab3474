// The SASL messages of the two OAuth2 mechanisms IMAP servers offer. No I/O.
//
//   XOAUTH2 (Google's "IMAP XOAUTH2 protocol", also Microsoft 365):
//     base64("user=" user ^A "auth=Bearer " token ^A ^A)
//   OAUTHBEARER (RFC 7628 §3.1), with the GS2 header of RFC 5801:
//     base64("n,a=" saslname "," ^A "host=" host ^A "port=" port ^A
//            "auth=Bearer " token ^A ^A)
// On failure both servers send a "+" with a base64 JSON error
// ({"status":"401",...}); the client answers with an empty line (XOAUTH2) or
// a single ^A (OAUTHBEARER, RFC 7628 §3.2.3) and gets the tagged NO.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mailroom::auth {

std::string xoauth2_initial_response(std::string_view user, std::string_view token);
std::string oauthbearer_initial_response(std::string_view user, std::string_view host,
                                         std::uint16_t port, std::string_view token);
// The client's answer to an error challenge, already base64 (or empty).
std::string_view error_challenge_answer(bool oauthbearer);
// The server's error challenge decoded for a log line: printable ASCII, at
// most 200 characters; "" when it is empty or not base64.
std::string describe_error_challenge(std::string_view base64);

}  // namespace mailroom::auth
