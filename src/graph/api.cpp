#include "graph/api.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace mailroom::graph {

namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "graph"; }
  std::string message(int ev) const override {
    switch (static_cast<graph_errc>(ev)) {
      case graph_errc::token_rejected:
        return "Microsoft Graph rejected the access token";
      case graph_errc::throttled:
        return "Microsoft Graph is throttling requests";
      case graph_errc::unavailable:
        return "Microsoft Graph is unavailable";
      case graph_errc::refused:
        return "Microsoft Graph refused the request";
      case graph_errc::bad_answer:
        return "unexpected answer from Microsoft Graph";
      case graph_errc::not_found:
        return "no such message in Microsoft Graph";
    }
    return "graph error";
  }
};

// The size property asked for with each listed message (PR_MESSAGE_SIZE).
constexpr std::string_view size_property = "Integer 0x0E08";

// Whether an extended property's id names PR_MESSAGE_SIZE. Graph answers the
// id in its own spelling ("Integer 0xe08"), so the tag is compared as a number.
bool is_size_property(std::string_view id) {
  constexpr std::string_view type = "Integer 0x";
  if (id.size() <= type.size() || id.size() > type.size() + 8) return false;
  for (std::size_t i = 0; i < type.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(id[i])) !=
        std::tolower(static_cast<unsigned char>(type[i])))
      return false;
  const std::string_view tag = id.substr(type.size());
  unsigned n = 0;
  const auto [end, ec] = std::from_chars(tag.data(), tag.data() + tag.size(), n, 16);
  return ec == std::errc{} && end == tag.data() + tag.size() && n == 0x0E08;
}

// Unread messages, with receivedDateTime first (see list_unread_url).
constexpr std::string_view unread_filter =
    "receivedDateTime%20ge%201900-01-01T00:00:00Z%20and%20isRead%20eq%20false";

std::string user_messages(std::string_view graph_endpoint, std::string_view user) {
  std::string url(graph_endpoint);
  url += "/v1.0/users/";
  url += encode_path_segment(user);
  return url;
}

// Two to four digits at s[pos..pos+n).
bool digits(std::string_view s, std::size_t pos, std::size_t n, int& out) {
  if (pos + n > s.size()) return false;
  const auto [end, ec] = std::from_chars(s.data() + pos, s.data() + pos + n, out);
  return ec == std::errc{} && end == s.data() + pos + n;
}

std::string excerpt(std::string_view s) {
  std::string out(s.substr(0, 200));
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  return out;
}

}  // namespace

const boost::system::error_category& graph_category() {
  static const category c;
  return c;
}

bool is_retriable(boost::system::error_code ec) {
  return ec != graph_errc::refused && ec != graph_errc::token_rejected &&
         ec != graph_errc::not_found;
}

std::string encode_path_segment(std::string_view s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    const bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                      std::string_view("-._~!$&'()*+,;=:@").find(ch) != std::string_view::npos;
    if (keep) {
      out += ch;
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::optional<std::int64_t> parse_utc_time(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS, then optional fraction, then Z (Graph's DateTimeOffset in UTC).
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0;
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
      s[13] != ':' || s[16] != ':')
    return std::nullopt;
  if (!digits(s, 0, 4, y) || !digits(s, 5, 2, mo) || !digits(s, 8, 2, d) || !digits(s, 11, 2, h) ||
      !digits(s, 14, 2, mi) || !digits(s, 17, 2, se))
    return std::nullopt;
  std::size_t i = 19;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
  }
  if (i + 1 != s.size() || (s[i] != 'Z' && s[i] != 'z')) return std::nullopt;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) return std::nullopt;
  // Days from the civil date (Howard Hinnant's days_from_civil).
  const int yy = y - (mo <= 2);
  const int era = yy / 400;
  const unsigned yoe = static_cast<unsigned>(yy - era * 400);
  const unsigned doy = static_cast<unsigned>((153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1);
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  const std::int64_t days = static_cast<std::int64_t>(era) * 146097 + doe - 719468;
  return days * 86400 + h * 3600 + mi * 60 + se;
}

std::string list_unread_url(std::string_view graph_endpoint, std::string_view user,
                            std::string_view folder, std::size_t page_size) {
  std::string url = user_messages(graph_endpoint, user);
  url += "/mailFolders/";
  url += encode_path_segment(folder);
  // Oldest first, so that a backlog is delivered in arrival order. Graph
  // refuses an $orderby whose property does not lead the $filter
  // (InefficientFilter), hence the always-true date clause.
  url += "/messages?$filter=";
  url += unread_filter;
  url += "&$orderby=receivedDateTime%20asc&$select=id,categories,receivedDateTime";
  url += "&$expand=singleValueExtendedProperties($filter=id%20eq%20'";
  url += encode_path_segment(size_property);
  url += "')&$top=";
  url += std::to_string(page_size);
  return url;
}

std::string oldest_unread_url(std::string_view graph_endpoint, std::string_view user,
                              std::string_view folder) {
  std::string url = user_messages(graph_endpoint, user);
  url += "/mailFolders/";
  url += encode_path_segment(folder);
  url += "/messages?$filter=";
  url += unread_filter;
  url += "&$orderby=receivedDateTime%20asc&$select=id,receivedDateTime,subject&$top=1";
  return url;
}

boost::system::result<std::optional<message_summary>> parse_oldest_unread(std::string_view body,
                                                                          std::string& detail) {
  const auto json = nlohmann::json::parse(body, nullptr, false);
  const auto value = json.is_object() ? json.find("value") : json.end();
  if (json.is_discarded() || !json.is_object() || value == json.end() || !value->is_array()) {
    detail = "an answer without a \"value\" array: " + excerpt(body);
    return make_error_code(graph_errc::bad_answer);
  }
  if (value->empty()) return std::optional<message_summary>{};
  const auto& m = value->front();
  if (!m.is_object() || !m.contains("id") || !m["id"].is_string() ||
      m["id"].get_ref<const std::string&>().empty()) {
    detail = "a listed message without an id";
    return make_error_code(graph_errc::bad_answer);
  }
  message_summary out;
  out.id = m["id"].get<std::string>();
  if (m.contains("receivedDateTime") && m["receivedDateTime"].is_string())
    out.received = m["receivedDateTime"].get<std::string>();
  if (m.contains("subject") && m["subject"].is_string())
    out.subject = m["subject"].get<std::string>();
  return std::optional<message_summary>(std::move(out));
}

std::string message_url(std::string_view graph_endpoint, std::string_view user,
                        std::string_view id) {
  return user_messages(graph_endpoint, user) + "/messages/" + encode_path_segment(id);
}

std::string message_value_url(std::string_view graph_endpoint, std::string_view user,
                              std::string_view id) {
  return message_url(graph_endpoint, user, id) + "/$value";
}

boost::system::result<message_page> parse_message_page(std::string_view body,
                                                       std::string_view graph_endpoint,
                                                       std::string& detail) {
  const auto json = nlohmann::json::parse(body, nullptr, false);
  if (json.is_discarded() || !json.is_object()) {
    detail = "a page of messages that is not a JSON object: " + excerpt(body);
    return make_error_code(graph_errc::bad_answer);
  }
  const auto value = json.find("value");
  if (value == json.end() || !value->is_array()) {
    detail = "a page of messages without a \"value\" array";
    return make_error_code(graph_errc::bad_answer);
  }
  message_page page;
  for (const auto& m : *value) {
    const auto id = m.is_object() ? m.find("id") : m.end();
    if (!m.is_object() || id == m.end() || !id->is_string() ||
        id->get_ref<const std::string&>().empty()) {
      detail = "a listed message without an id";
      return make_error_code(graph_errc::bad_answer);
    }
    listed_message lm;
    lm.id = id->get<std::string>();
    const auto props = m.find("singleValueExtendedProperties");
    if (props != m.end() && props->is_array()) {
      for (const auto& p : *props) {
        if (!p.is_object() || !p.contains("id") || !p["id"].is_string() ||
            !is_size_property(p["id"].get_ref<const std::string&>()))
          continue;
        const auto v = p.find("value");
        if (v == p.end()) continue;
        if (v->is_number_unsigned()) {
          lm.size = v->get<std::uint64_t>();
        } else if (v->is_string()) {  // Graph sends extended property values as strings
          const auto& s = v->get_ref<const std::string&>();
          std::uint64_t n = 0;
          const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
          if (ec == std::errc{} && end == s.data() + s.size()) lm.size = n;
        }
      }
    }
    if (const auto r = m.find("receivedDateTime"); r != m.end() && r->is_string())
      lm.received = parse_utc_time(r->get_ref<const std::string&>()).value_or(0);
    if (const auto cats = m.find("categories"); cats != m.end() && cats->is_array()) {
      for (const auto& c : *cats)
        if (c.is_string()) lm.categories.push_back(c.get<std::string>());
    }
    page.messages.push_back(std::move(lm));
  }
  const auto next = json.find("@odata.nextLink");
  if (next != json.end() && next->is_string()) {
    page.next_link = next->get<std::string>();
    // Only to the configured endpoint: the bearer token goes with it.
    const std::string prefix = std::string(graph_endpoint) + "/";
    if (page.next_link.compare(0, prefix.size(), prefix) != 0) {
      detail = "a next page outside " + std::string(graph_endpoint);
      return make_error_code(graph_errc::bad_answer);
    }
  }
  return page;
}

failure classify(long status, std::string_view body, std::string_view retry_after) {
  failure f;
  // Graph's error body: {"error": {"code": "...", "message": "..."}}.
  std::string code;
  std::string message;
  const auto json = nlohmann::json::parse(body, nullptr, false);
  if (!json.is_discarded() && json.is_object()) {
    const auto e = json.find("error");
    if (e != json.end() && e->is_object()) {
      if (const auto c = e->find("code"); c != e->end() && c->is_string())
        code = c->get<std::string>();
      if (const auto m = e->find("message"); m != e->end() && m->is_string())
        message = m->get<std::string>();
    }
  }
  f.detail = "HTTP " + std::to_string(status);
  if (!code.empty()) f.detail += " " + excerpt(code.substr(0, 64));
  if (!message.empty()) f.detail += ": " + excerpt(message);
  if (code.empty() && message.empty() && !body.empty()) f.detail += ": " + excerpt(body);

  if (status == 429 || status == 503) {
    f.ec = graph_errc::throttled;
    std::uint64_t s = 0;
    const auto [end, ec] =
        std::from_chars(retry_after.data(), retry_after.data() + retry_after.size(), s);
    if (ec == std::errc{} && end == retry_after.data() + retry_after.size() && !retry_after.empty())
      f.retry_after = std::chrono::seconds(std::min<std::uint64_t>(s, 3600));
  } else if (status == 401) {
    f.ec = graph_errc::token_rejected;
  } else if (status == 404 && code == "ErrorItemNotFound") {
    f.ec = graph_errc::not_found;
  } else if (status >= 500 || status == 408) {
    f.ec = graph_errc::unavailable;
  } else {
    f.ec = graph_errc::refused;
  }
  return f;
}

}  // namespace mailroom::graph
