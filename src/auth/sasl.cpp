#include "auth/sasl.hpp"

#include "delivery/jwt.hpp"

#include <array>

namespace mailroom::auth {

namespace {

// RFC 5801 §4 saslname: ',' and '=' are escaped.
std::string saslname(std::string_view s) {
  std::string out;
  for (const char c : s) {
    if (c == ',') {
      out += "=2C";
    } else if (c == '=') {
      out += "=3D";
    } else {
      out += c;
    }
  }
  return out;
}

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace

std::string xoauth2_initial_response(std::string_view user, std::string_view token) {
  std::string raw = "user=";
  raw += user;
  raw +=
      "\x01"
      "auth=Bearer ";
  raw += token;
  raw += "\x01\x01";
  return delivery::base64_encode(raw);
}

std::string oauthbearer_initial_response(std::string_view user, std::string_view host,
                                         std::uint16_t port, std::string_view token) {
  std::string raw = "n,a=" + saslname(user) + ",\x01";
  raw += "host=";
  raw += host;
  raw += "\x01port=" + std::to_string(port) + "\x01";
  raw += "auth=Bearer ";
  raw += token;
  raw += "\x01\x01";
  return delivery::base64_encode(raw);
}

std::string_view error_challenge_answer(bool oauthbearer) {
  return oauthbearer ? "AQ==" : "";  // base64("\x01")
}

std::string describe_error_challenge(std::string_view base64) {
  std::string decoded;
  unsigned bits = 0;
  int count = 0;
  for (const char c : base64) {
    if (c == '=') break;
    const int v = base64_value(c);
    if (v < 0) return {};
    bits = (bits << 6) | static_cast<unsigned>(v);
    count += 6;
    if (count >= 8) {
      count -= 8;
      decoded += static_cast<char>((bits >> count) & 0xff);
    }
  }
  std::string out;
  for (const char ch : decoded) {
    if (out.size() >= 200) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(ch);
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : ' ';
  }
  return out;
}

}  // namespace mailroom::auth
