#include "delivery/jwt.hpp"
#include "delivery/errc.hpp"

#include "support/temp_dir.hpp"

#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

namespace mailroom::delivery {
namespace {

std::string base64url_decode(std::string_view in) {
  std::string std64(in);
  for (char& c : std64) {
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  while (std64.size() % 4 != 0) std64.push_back('=');
  std::vector<unsigned char> out(std64.size());
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(std64.data()),
                                static_cast<int>(std64.size()));
  EXPECT_GE(n, 0);
  const std::size_t pad = std::count(std64.end() - 2, std64.end(), '=');
  return std::string(reinterpret_cast<const char*>(out.data()), static_cast<std::size_t>(n) - pad);
}

// HMAC-SHA256 through OpenSSL 3's EVP_MAC interface, independent of the HMAC()
// shortcut that make_jwt uses.
std::string hmac_sha256(std::string_view key, std::string_view data) {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                         OSSL_PARAM_construct_end()};
  EXPECT_EQ(
      EVP_MAC_init(ctx, reinterpret_cast<const unsigned char*>(key.data()), key.size(), params), 1);
  EXPECT_EQ(EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(data.data()), data.size()),
            1);
  unsigned char out[EVP_MAX_MD_SIZE];
  std::size_t len = 0;
  EXPECT_EQ(EVP_MAC_final(ctx, out, &len, sizeof out), 1);
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::vector<std::string> split_token(const std::string& token) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t dot = token.find('.', start);
    parts.push_back(token.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

const std::string key = "secret-key-0123456789abcdef01234567";

TEST(Jwt, MatchesRubyJwt) {
  // ruby-jwt 2.5.0, as lib/mail_room/jwt.rb calls it:
  //   JWT.encode({nonce: "00112233445566778899aabb", iat: 1795864094, iss: "gitlab-mailroom"},
  //              Base64.strict_decode64("c2VjcmV0LWtleS0wMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc="),
  //              "HS256")
  EXPECT_EQ(make_jwt(key, "gitlab-mailroom", 1795864094, "00112233445566778899aabb"),
            "eyJhbGciOiJIUzI1NiJ9."
            "eyJub25jZSI6IjAwMTEyMjMzNDQ1NTY2Nzc4ODk5YWFiYiIsImlhdCI6MTc5NTg2NDA5NCwiaXNzIjoiZ2l0bG"
            "FiLW1haWxyb29tIn0."
            "L72zM_CfH3USMbrmbFITrvi-lTuE6treXKhYuYsMOi4");
}

TEST(Jwt, HeaderPayloadAndSignatureVerify) {
  const std::string token = make_jwt(key, "mailroom", 1700000000, "abcdefabcdefabcdefabcdef");
  const auto parts = split_token(token);
  ASSERT_EQ(parts.size(), 3u);
  for (const auto& p : parts) EXPECT_EQ(p.find_first_of("+/="), std::string::npos) << p;
  EXPECT_EQ(base64url_decode(parts[0]), R"({"alg":"HS256"})");
  EXPECT_EQ(base64url_decode(parts[1]),
            R"({"nonce":"abcdefabcdefabcdefabcdef","iat":1700000000,"iss":"mailroom"})");
  EXPECT_EQ(base64url_decode(parts[2]), hmac_sha256(key, parts[0] + "." + parts[1]));
  EXPECT_NE(base64url_decode(parts[2]), hmac_sha256("other key", parts[0] + "." + parts[1]));
}

TEST(Jwt, IssuerIsJsonEscaped) {
  const auto parts = split_token(make_jwt(key, "a\"b\\c", 1, "n"));
  EXPECT_EQ(base64url_decode(parts[1]), R"({"nonce":"n","iat":1,"iss":"a\"b\\c"})");
}

TEST(Base64, EncodesWithAndWithoutPadding) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("user:p\xFF\xFEss"), "dXNlcjpw//5zcw==");
  EXPECT_EQ(base64url_encode("user:p\xFF\xFEss"), "dXNlcjpw__5zcw");
}

class JwtKeyFile : public ::testing::Test {
 protected:
  std::string write(const std::string& content) {
    const std::string path = dir_ + "/secret";
    std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
    return path;
  }

  mailroom::test::temp_dir tmp_{"mailroom-jwt"};
  const std::string dir_ = tmp_.str();
};

TEST_F(JwtKeyFile, DecodesBase64AndChompsOneLineEnding) {
  for (const char* ending : {"", "\n", "\r\n", "\r"}) {
    std::string detail;
    auto k = load_jwt_key(
        write(std::string("c2VjcmV0LWtleS0wMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc=") + ending), detail);
    ASSERT_TRUE(k) << detail;
    EXPECT_EQ(*k, key);
  }
}

TEST_F(JwtKeyFile, RejectsWhatStrictDecode64Rejects) {
  // Each of these makes Ruby's Base64.strict_decode64 raise ArgumentError.
  for (const char* content : {"c2VjcmV0\n\n", "c2Vj cmV0", "c2VjcmV0LQ", "QR==", "QUJ=", "QQ=A",
                              "Q===", "c2Vj!mV0", "c2VjcmV0-_==", "\nc2VjcmV0"}) {
    std::string detail;
    auto k = load_jwt_key(write(content), detail);
    ASSERT_FALSE(k) << content;
    EXPECT_EQ(k.error(), make_error_code(errc::misconfigured));
    EXPECT_NE(detail.find("base64"), std::string::npos) << detail;
  }
}

TEST_F(JwtKeyFile, ErrorNeverShowsTheContent) {
  std::string detail;
  auto k = load_jwt_key(write("supersecretvalue!"), detail);
  ASSERT_FALSE(k);
  EXPECT_EQ(detail.find("supersecret"), std::string::npos) << detail;
  EXPECT_NE(detail.find(dir_), std::string::npos) << detail;
}

TEST_F(JwtKeyFile, EmptyKeyIsAnError) {
  for (const char* content : {"", "\n"}) {
    std::string detail;
    auto k = load_jwt_key(write(content), detail);
    ASSERT_FALSE(k);
    EXPECT_EQ(k.error(), make_error_code(errc::misconfigured));
    EXPECT_NE(detail.find("empty"), std::string::npos) << detail;
  }
}

TEST_F(JwtKeyFile, MissingFileIsAnError) {
  std::string detail;
  auto k = load_jwt_key(dir_ + "/missing", detail);
  ASSERT_FALSE(k);
  EXPECT_EQ(k.error(), make_error_code(errc::misconfigured));
  EXPECT_NE(detail.find("No such file"), std::string::npos) << detail;
}

TEST(DeliveryCategory, NamesItsErrors) {
  EXPECT_STREQ(delivery_category().name(), "mailroom.delivery");
  EXPECT_EQ(make_error_code(errc::timed_out).message(), "delivery timed out");
}

}  // namespace
}  // namespace mailroom::delivery
