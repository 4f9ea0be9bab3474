#include "imap/proto/decode.hpp"

#include "imap/proto/ascii.hpp"
#include "imap/proto/errc.hpp"
#include "imap/proto/fetch_summary.hpp"

#include <algorithm>
#include <limits>

namespace mailroom::imap {
namespace {

boost::system::error_code malformed() {
  return errc::malformed_response;
}

bool fits_u32(const value& v) {
  return v.k == value::kind::number && v.number <= std::numeric_limits<std::uint32_t>::max();
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

std::optional<std::uint32_t> code_number(const response& r, std::string_view name) {
  if (!r.code || r.code->name != name) return std::nullopt;
  const std::string_view args = r.code->args;
  if (args.empty() || args.size() > 10) return std::nullopt;
  std::uint64_t n = 0;
  for (char c : args) {
    if (!detail::is_digit(c)) return std::nullopt;
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  // Both are nz-number (RFC 3501 §9).
  if (n == 0 || n > std::numeric_limits<std::uint32_t>::max()) return std::nullopt;
  return static_cast<std::uint32_t>(n);
}

}  // namespace

boost::system::result<fetch_item> decode_fetch(response&& r) {
  if (r.k != response::kind::untagged || r.keyword != "FETCH" || !r.number || r.data.size() != 1 ||
      r.data.front().k != value::kind::list) {
    return malformed();
  }
  auto& atts = r.data.front().items;
  // msg-att = "(" (msg-att-dynamic / msg-att-static) *(SP ...) ")": name/value pairs.
  if (atts.size() % 2 != 0) return malformed();

  fetch_item out;
  out.seq = *r.number;
  for (std::size_t i = 0; i < atts.size(); i += 2) {
    value& name = atts[i];
    value& val = atts[i + 1];
    if (name.k != value::kind::atom) return malformed();
    const std::string upper = detail::ascii_upper(name.text);
    if (upper == "UID") {
      if (!fits_u32(val)) return malformed();
      out.uid = static_cast<std::uint32_t>(val.number);
    } else if (upper == "RFC822.SIZE") {
      if (val.k != value::kind::number) return malformed();
      out.size = val.number;
    } else if (upper == "FLAGS") {
      if (val.k != value::kind::list) return malformed();
      for (value& f : val.items) {
        if (f.k != value::kind::atom) return malformed();
        out.flags.push_back(std::move(f.text));
      }
    } else if (upper == "INTERNALDATE") {
      if (val.k == value::kind::string) out.internal_date = parse_internal_date(val.text);
    } else if (upper == "BODY[]" || upper == "BODY.PEEK[]" || upper == "RFC822") {
      if (val.k == value::kind::string) {
        out.body = std::move(val.text);
      } else if (val.k != value::kind::nil) {
        return malformed();
      }
    } else if (starts_with(upper, "BODY[") || starts_with(upper, "BINARY[") ||
               upper == "RFC822.HEADER" || upper == "RFC822.TEXT") {
      // Sections are nstring; BINARY.SIZE and RFC822.SIZE (numbers) do not get here.
      if (val.k == value::kind::string) {
        out.sections.emplace_back(std::move(name.text), std::move(val.text));
      } else if (val.k != value::kind::nil) {
        return malformed();
      }
    }
    // Anything else (ENVELOPE, BODYSTRUCTURE, MODSEQ, ...) is unused.
  }
  return out;
}

boost::system::result<std::vector<std::uint32_t>> decode_search(const response& r) {
  if (r.k != response::kind::untagged || r.keyword != "SEARCH") return malformed();
  std::vector<std::uint32_t> out;
  out.reserve(r.data.size());
  for (std::size_t i = 0; i < r.data.size(); ++i) {
    const value& v = r.data[i];
    if (fits_u32(v)) {
      out.push_back(static_cast<std::uint32_t>(v.number));
      continue;
    }
    // search-sort-mod-seq = "(" "MODSEQ" SP mod-sequence-value ")" (RFC 7162 §7),
    // only after the numbers.
    const bool modseq = v.k == value::kind::list && i + 1 == r.data.size() && v.items.size() == 2 &&
                        v.items[0].k == value::kind::atom &&
                        detail::ascii_iequals(v.items[0].text, "MODSEQ") &&
                        v.items[1].k == value::kind::number;
    if (!modseq) return malformed();
  }
  return out;
}

std::vector<std::string> decode_capabilities(const response& r) {
  std::vector<std::string> out;
  if (r.k == response::kind::untagged && r.keyword == "CAPABILITY") {
    for (const value& v : r.data) {
      if (v.k == value::kind::atom) out.push_back(detail::ascii_upper(v.text));
    }
    return out;
  }
  if (r.code && r.code->name == "CAPABILITY") {
    std::string_view args = r.code->args;
    while (!args.empty()) {
      const std::size_t sp = args.find(' ');
      const std::string_view word = args.substr(0, sp);
      if (!word.empty()) out.push_back(detail::ascii_upper(word));
      if (sp == std::string_view::npos) break;
      args.remove_prefix(sp + 1);
    }
  }
  return out;
}

bool has_capability(const std::vector<std::string>& caps, std::string_view name) {
  return std::any_of(caps.begin(), caps.end(),
                     [&](const std::string& c) { return detail::ascii_iequals(c, name); });
}

std::optional<std::uint32_t> decode_uidvalidity(const response& r) {
  return code_number(r, "UIDVALIDITY");
}

std::optional<std::uint32_t> decode_uidnext(const response& r) {
  return code_number(r, "UIDNEXT");
}

}  // namespace mailroom::imap
