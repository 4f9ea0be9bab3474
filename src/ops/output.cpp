#include "ops/output.hpp"

#include <fmt/format.h>

#include <ctime>

namespace mailroom::ops {
namespace {

// Cuts `s` to at most `width` code points (UTF-8), marking the cut with "…",
// and pads it to `width` columns (approximately: one column per code point).
std::string fit(std::string_view s, std::size_t width) {
  std::string out;
  std::size_t points = 0;
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t len = 1;
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0xF0) {
      len = 4;
    } else if (c >= 0xE0) {
      len = 3;
    } else if (c >= 0xC0) {
      len = 2;
    }
    if (points + 1 == width && i + len < s.size()) {
      out += "…";
      ++points;
      break;
    }
    out.append(s.substr(i, len));
    ++points;
    i += len;
    if (points == width) break;
  }
  out.append(width > points ? width - points : 0, ' ');
  return out;
}

std::tm utc(std::int64_t t) {
  const std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  return tm;
}

}  // namespace

std::string format_time(std::optional<std::int64_t> t) {
  if (!t) return "-";
  const std::tm tm = utc(*t);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

nlohmann::ordered_json json_time(std::optional<std::int64_t> t) {
  if (!t) return nullptr;
  const std::tm tm = utc(*t);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string printable(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = ' ';
  }
  return out;
}

std::string dump(const nlohmann::ordered_json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::ordered_json message_json(const listed_message& m, std::int64_t now) {
  const auto& h = m.view.headers;
  nlohmann::ordered_json j;
  j["uid"] = m.view.uid;
  const auto when = m.view.when();
  j["date"] = json_time(when);
  j["age_seconds"] = when ? nlohmann::ordered_json(now - *when) : nlohmann::ordered_json(nullptr);
  j["date_header"] =
      h.date_text.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(h.date_text);
  j["internal_date"] = json_time(m.view.internal_date);
  j["from"] = h.from;
  j["to"] = h.to;
  j["cc"] = h.cc;
  j["subject"] = h.subject;
  j["message_id"] = h.message_id;
  j["size"] = m.size;
  j["flags"] = m.flags;
  return j;
}

message_listing::message_listing(std::ostream& out, bool json, std::int64_t now)
    : out_(out), json_(json), now_(now) {}

void message_listing::header() {
  if (json_) {
    out_ << "[";
    return;
  }
  out_ << fmt::format("{:>8}  {:<20}  {:>7}  {}  {}  {}\n", "UID", "DATE", "AGE", fit("FROM", 28),
                      fit("TO", 44), "SUBJECT");
}

void message_listing::row(const listed_message& m) {
  if (json_) {
    out_ << (rows_ == 0 ? "\n" : ",\n") << dump(message_json(m, now_));
  } else {
    const auto when = m.view.when();
    const std::string age = when ? format_age(std::chrono::seconds(now_ - *when)) : "-";
    const auto& h = m.view.headers;
    out_ << fmt::format("{:>8}  {:<20}  {:>7}  {}  {}  {}\n", m.view.uid, format_time(when), age,
                        fit(printable(h.from), 28), fit(printable(h.to), 44), printable(h.subject));
  }
  ++rows_;
}

void message_listing::footer() {
  if (json_) out_ << (rows_ == 0 ? "]\n" : "\n]\n");
  out_.flush();
}

std::string runbook_line(const listed_message& m, std::int64_t now) {
  const auto& h = m.view.headers;
  const auto when = m.view.when();
  const std::string age = when ? format_age(std::chrono::seconds(now - *when)) + " ago" : "no date";
  return fmt::format("UID {} @{} ({}) from {} to {}. Subject: {}", m.view.uid, format_time(when),
                     age, printable(h.from.empty() ? "-" : h.from),
                     printable(h.to.empty() ? "-" : h.to), printable(h.subject));
}

}  // namespace mailroom::ops
