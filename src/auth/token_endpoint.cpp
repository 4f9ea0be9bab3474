#include "auth/token_endpoint.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdlib>

namespace mailroom::auth {

namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "mailroom.oauth2"; }
  std::string message(int ev) const override {
    switch (static_cast<token_errc>(ev)) {
      case token_errc::refused:
        return "the OAuth2 token endpoint refused the credentials";
      case token_errc::unavailable:
        return "no OAuth2 access token from the token endpoint";
    }
    return "unknown OAuth2 error";
  }
};

// RFC 3986 unreserved characters stay, everything else is %XX (the form
// encoding of RFC 6749 appendix B; a space as %20 is accepted everywhere).
std::string form_escape(std::string_view s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out += ch;
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 0xf];
    }
  }
  return out;
}

void add(std::string& body, std::string_view key, std::string_view value) {
  if (!body.empty()) body += '&';
  body += key;
  body += '=';
  body += form_escape(value);
}

std::string printable(std::string_view s, std::size_t max) {
  std::string out;
  for (const char ch : s) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(ch);
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : ' ';
  }
  return out;
}

}  // namespace

const boost::system::error_category& token_category() {
  static const category instance;
  return instance;
}

std::string token_request_body(const config::oauth2_options& o, std::string_view refresh_token) {
  std::string body;
  if (!refresh_token.empty()) {
    add(body, "grant_type", "refresh_token");
    add(body, "refresh_token", refresh_token);
  } else {
    add(body, "grant_type", "client_credentials");
  }
  add(body, "client_id", o.client_id);
  if (!o.client_secret.empty()) add(body, "client_secret", o.client_secret.reveal());
  if (!o.scope.empty()) add(body, "scope", o.scope);
  return body;
}

boost::system::result<token_grant> parse_token_response(long http_status, std::string_view body,
                                                        std::string& detail) {
  const auto json = nlohmann::json::parse(body, nullptr, false);
  const auto text = [&](const char* key) -> std::string {
    if (!json.is_object() || !json.contains(key) || !json[key].is_string()) return {};
    return json[key].get<std::string>();
  };
  if (http_status == 200) {
    token_grant g;
    g.access_token = text("access_token");
    if (g.access_token.empty()) {
      detail = "HTTP 200 without an access_token";
      return token_errc::unavailable;
    }
    if (json.contains("expires_in")) {
      // A number, or (some endpoints) a string of digits.
      long long s = 0;
      const auto& v = json["expires_in"];
      if (v.is_number_integer()) s = v.get<long long>();
      if (v.is_string()) s = std::atoll(v.get<std::string>().c_str());
      if (s > 0) g.expires_in = std::chrono::seconds(s);
    }
    g.refresh_token = text("refresh_token");
    return g;
  }
  const std::string error = text("error");
  const std::string description = text("error_description");
  detail = "HTTP " + std::to_string(http_status);
  if (!error.empty()) detail += ": " + printable(error, 64);
  if (!description.empty()) detail += " (" + printable(description, 200) + ")";
  if (error.empty() && !body.empty()) detail += ": " + printable(body, 200);
  // RFC 6749 §5.2: these say the credentials or the grant are wrong; asking
  // again with the same ones gives the same answer.
  static constexpr std::array<std::string_view, 7> permanent{
      "invalid_grant",   "invalid_client",         "unauthorized_client", "invalid_scope",
      "invalid_request", "unsupported_grant_type", "access_denied"};
  if ((http_status == 400 || http_status == 401 || http_status == 403) &&
      std::find(permanent.begin(), permanent.end(), error) != permanent.end()) {
    return token_errc::refused;
  }
  return token_errc::unavailable;
}

std::chrono::seconds renew_after(std::chrono::seconds expires_in) {
  const auto margin = std::min(std::max(expires_in / 10, std::chrono::seconds(60)), expires_in / 2);
  return expires_in - margin;
}

}  // namespace mailroom::auth
