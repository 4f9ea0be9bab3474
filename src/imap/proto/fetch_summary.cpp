#include "imap/proto/fetch_summary.hpp"

#include "imap/proto/ascii.hpp"
#include "imap/proto/errc.hpp"

#include <array>
#include <limits>

namespace mailroom::imap {
namespace {

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

std::optional<int> digits(std::string_view s) {
  if (s.empty()) return std::nullopt;
  int n = 0;
  for (char c : s) {
    if (!detail::is_digit(c)) return std::nullopt;
    n = n * 10 + (c - '0');
  }
  return n;
}

// Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar
// (H. Hinnant's days_from_civil), so no time-zone-dependent libc call is needed.
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

}  // namespace

std::optional<std::int64_t> parse_internal_date(std::string_view s) {
  // date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE
  // (the quotes are gone by now); date-day-fixed = (SP DIGIT) / 2DIGIT.
  if (!s.empty() && s[0] == ' ') s.remove_prefix(1);
  const std::size_t dash = s.find('-');
  if (dash == std::string_view::npos || dash > 2) return std::nullopt;
  const auto day = digits(s.substr(0, dash));
  const std::string_view rest = s.substr(dash);
  if (!day || rest.size() != 24 || rest[0] != '-' || rest[4] != '-' || rest[9] != ' ' ||
      rest[12] != ':' || rest[15] != ':' || rest[18] != ' ') {
    return std::nullopt;
  }
  static constexpr std::array<std::string_view, 12> months{
      "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
  const std::string mon = detail::ascii_upper(rest.substr(1, 3));
  unsigned month = 0;
  for (unsigned i = 0; i < months.size(); ++i) {
    if (months[i] == mon) month = i + 1;
  }
  const auto year = digits(rest.substr(5, 4));
  const auto hh = digits(rest.substr(10, 2));
  const auto mm = digits(rest.substr(13, 2));
  const auto ss = digits(rest.substr(16, 2));
  const char sign = rest[19];
  const auto zh = digits(rest.substr(20, 2));
  const auto zm = digits(rest.substr(22, 2));
  if (month == 0 || !year || !hh || !mm || !ss || !zh || !zm || (sign != '+' && sign != '-') ||
      *day < 1 || *day > 31 || *hh > 23 || *mm > 59 || *ss > 60) {
    return std::nullopt;
  }
  const std::int64_t local = days_from_civil(*year, month, static_cast<unsigned>(*day)) * 86400 +
                             *hh * 3600 + *mm * 60 + *ss;
  const std::int64_t offset = (*zh * 3600 + *zm * 60) * (sign == '-' ? -1 : 1);
  return local - offset;
}

boost::system::result<message_summary> decode_message_summary(response&& r) {
  if (r.k != response::kind::untagged || r.keyword != "FETCH" || !r.number || r.data.size() != 1 ||
      r.data.front().k != value::kind::list) {
    return boost::system::error_code(errc::malformed_response);
  }
  auto& atts = r.data.front().items;
  if (atts.size() % 2 != 0) return boost::system::error_code(errc::malformed_response);
  message_summary out;
  out.seq = *r.number;
  for (std::size_t i = 0; i < atts.size(); i += 2) {
    value& name = atts[i];
    value& val = atts[i + 1];
    if (name.k != value::kind::atom) return boost::system::error_code(errc::malformed_response);
    const std::string upper = detail::ascii_upper(name.text);
    const bool number = val.k == value::kind::number;
    if (upper == "UID" && number && val.number <= std::numeric_limits<std::uint32_t>::max()) {
      out.uid = static_cast<std::uint32_t>(val.number);
    } else if (upper == "RFC822.SIZE" && number) {
      out.size = val.number;
    } else if (upper == "INTERNALDATE" && val.k == value::kind::string) {
      out.internal_date = parse_internal_date(val.text);
    } else if (upper == "FLAGS" && val.k == value::kind::list) {
      auto& flags = out.flags.emplace();
      for (value& f : val.items) flags.push_back(std::move(f.text));
    } else if (upper == "BODY[]" && val.k == value::kind::string) {
      out.body = std::move(val.text);
    } else if ((starts_with(upper, "BODY[HEADER") || upper == "RFC822.HEADER") &&
               val.k == value::kind::string) {
      out.header = std::move(val.text);
    }
  }
  return out;
}

}  // namespace mailroom::imap
