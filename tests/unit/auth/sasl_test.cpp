// The SASL initial responses, byte for byte (Google's XOAUTH2 page gives the
// layout; RFC 7628 §3.1 and RFC 5801 §4 OAUTHBEARER's).
#include "auth/sasl.hpp"

#include "delivery/jwt.hpp"

#include <gtest/gtest.h>

namespace mailroom::auth {
namespace {

TEST(Sasl, Xoauth2InitialResponse) {
  // Google's example: user=someuser@example.com^Aauth=Bearer
  // ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg^A^A
  EXPECT_EQ(xoauth2_initial_response("someuser@example.com",
                                     "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQm"
            "hkSFJoZG1semRHRXVZMjl0Q2cBAQ==");
}

TEST(Sasl, OauthbearerInitialResponseEscapesTheUser) {
  const std::string raw = std::string("n,a=a=3Db=2Cc@example.com,\x01") +
                          "host=imap.example.com\x01port=993\x01" + "auth=Bearer tok\x01\x01";
  EXPECT_EQ(oauthbearer_initial_response("a=b,c@example.com", "imap.example.com", 993, "tok"),
            delivery::base64_encode(raw));
}

TEST(Sasl, ErrorChallenge) {
  EXPECT_EQ(error_challenge_answer(false), "");
  EXPECT_EQ(error_challenge_answer(true), "AQ==");  // ^A, RFC 7628 §3.2.3
  EXPECT_EQ(describe_error_challenge(delivery::base64_encode(
                R"({"status":"401","schemes":"bearer","scope":"https://mail.google.com/"})")),
            R"({"status":"401","schemes":"bearer","scope":"https://mail.google.com/"})");
  EXPECT_EQ(describe_error_challenge("not base64!"), "");
  EXPECT_EQ(describe_error_challenge(delivery::base64_encode("a\nb\x01")), "a b ");
  EXPECT_EQ(describe_error_challenge(delivery::base64_encode(std::string(500, 'x'))),
            std::string(200, 'x') + "...");
}

}  // namespace
}  // namespace mailroom::auth
