#include "delivery/jwt.hpp"

#include "delivery/errc.hpp"
#include "delivery/job.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace mailroom::delivery {

namespace {

constexpr char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string encode(std::string_view data, const char* alphabet, bool pad) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  std::size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const std::uint32_t v = (p[i] << 16) | (p[i + 1] << 8) | p[i + 2];
    out.push_back(alphabet[(v >> 18) & 63]);
    out.push_back(alphabet[(v >> 12) & 63]);
    out.push_back(alphabet[(v >> 6) & 63]);
    out.push_back(alphabet[v & 63]);
  }
  const std::size_t rest = data.size() - i;
  if (rest == 1) {
    const std::uint32_t v = p[i] << 16;
    out.push_back(alphabet[(v >> 18) & 63]);
    out.push_back(alphabet[(v >> 12) & 63]);
    if (pad) out.append("==");
  } else if (rest == 2) {
    const std::uint32_t v = (p[i] << 16) | (p[i + 1] << 8);
    out.push_back(alphabet[(v >> 18) & 63]);
    out.push_back(alphabet[(v >> 12) & 63]);
    out.push_back(alphabet[(v >> 6) & 63]);
    if (pad) out.push_back('=');
  }
  return out;
}

constexpr std::array<signed char, 256> b64_values = [] {
  std::array<signed char, 256> t{};
  for (auto& v : t) v = -1;
  for (int i = 0; i < 64; ++i)
    t[static_cast<unsigned char>(b64_alphabet[i])] = static_cast<signed char>(i);
  return t;
}();

// Base64.strict_decode64 (Ruby's unpack("m0")): length a multiple of 4, only
// the standard alphabet, '=' only as final padding, and the bits that padding
// leaves unused must be zero. Returns false on any violation.
bool strict_decode(std::string_view in, std::string& out) {
  out.clear();
  if (in.size() % 4 != 0) return false;
  out.reserve(in.size() / 4 * 3);
  for (std::size_t i = 0; i < in.size(); i += 4) {
    const bool last = i + 4 == in.size();
    int v[4];
    int pads = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = in[i + k];
      if (c == '=' && last && k >= 2) {
        v[k] = 0;
        ++pads;
        continue;
      }
      if (pads > 0) return false;  // data after padding
      v[k] = b64_values[static_cast<unsigned char>(c)];
      if (v[k] < 0) return false;
    }
    const std::uint32_t n = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out.push_back(static_cast<char>(n >> 16));
    if (pads == 2) {
      if (v[1] & 0xf) return false;
    } else {
      out.push_back(static_cast<char>((n >> 8) & 0xff));
      if (pads == 1) {
        if (v[2] & 0x3) return false;
      } else {
        out.push_back(static_cast<char>(n & 0xff));
      }
    }
  }
  return true;
}

// Wipes key material from buffers we are done with.
void wipe(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

}  // namespace

std::string base64_encode(std::string_view data) {
  return encode(data, b64_alphabet, true);
}
std::string base64url_encode(std::string_view data) {
  return encode(data, b64url_alphabet, false);
}

boost::system::result<std::string> load_jwt_key(const std::string& path,
                                                std::string& error_detail) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    error_detail = "cannot read JWT secret file " + path + ": " + std::strerror(errno);
    return make_error_code(errc::misconfigured);
  }
  std::string text;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  const bool read_error = std::ferror(f) != 0;
  const int saved_errno = errno;
  std::fclose(f);
  OPENSSL_cleanse(buf, sizeof buf);
  if (read_error) {
    wipe(text);
    error_detail = "cannot read JWT secret file " + path + ": " + std::strerror(saved_errno);
    return make_error_code(errc::misconfigured);
  }

  // Ruby's String#chomp: one trailing "\r\n", "\n" or "\r".
  if (text.ends_with("\r\n")) {
    text.resize(text.size() - 2);
  } else if (text.ends_with('\n') || text.ends_with('\r')) {
    text.pop_back();
  }
  std::string key;
  const bool decoded = strict_decode(text, key);
  wipe(text);
  if (!decoded) {
    wipe(key);
    error_detail = "JWT secret file " + path + " does not hold strict base64";
    return make_error_code(errc::misconfigured);
  }
  if (key.empty()) {
    error_detail = "JWT secret file " + path + " is empty";
    return make_error_code(errc::misconfigured);
  }
  return key;
}

std::string make_jwt(std::string_view key, std::string_view issuer, std::int64_t iat,
                     std::string_view nonce) {
  // base64url('{"alg":"HS256"}'): ruby-jwt's default header, no "typ".
  std::string token = "eyJhbGciOiJIUzI1NiJ9.";

  std::string payload = R"({"nonce":)";
  append_json_string(payload, nonce);
  payload += R"(,"iat":)";
  payload += std::to_string(iat);
  payload += R"(,"iss":)";
  append_json_string(payload, issuer);
  payload.push_back('}');
  token += base64url_encode(payload);

  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(token.data()), token.size(), mac, &mac_len);
  token.push_back('.');
  token += base64url_encode(std::string_view(reinterpret_cast<const char*>(mac), mac_len));
  return token;
}

}  // namespace mailroom::delivery
