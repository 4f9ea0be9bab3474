// Properties of header_value() and message_id() over generated messages.
#include "mime/headers.hpp"

#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <string>
#include <vector>

namespace mailroom::mime {
namespace {

// A field value without line breaks or surrounding whitespace.
rc::Gen<std::string> gen_value() {
  return rc::gen::map(rc::gen::container<std::string>(rc::gen::inRange<char>(0x21, 0x7f)),
                      [](std::string s) { return s; });
}

// Splits `value` at spaces into folded lines, with CRLF or LF.
std::string fold(const std::string& value, const std::string& eol, std::size_t every) {
  std::string out;
  std::size_t n = 0;
  for (char c : value) {
    if (c == ' ' && every > 0 && ++n % every == 0) out += eol;
    out += c;
  }
  return out;
}

RC_GTEST_PROP(header_value_prop, arbitrary_bytes_are_bounded, (const std::string& raw)) {
  for (const char* name : {"Subject", "Message-ID", "X"}) {
    auto v = header_value(raw, name);
    if (v) {
      RC_ASSERT(v->size() <= max_header_value);
      RC_ASSERT(v->find('\n') == std::string::npos);
      if (!v->empty()) {
        RC_ASSERT(v->front() != ' ' && v->front() != '\t');
        RC_ASSERT(v->back() != ' ' && v->back() != '\t' && v->back() != '\r');
      }
    }
  }
  auto id = message_id(raw);
  if (id) {
    RC_ASSERT(id->size() >= 3u);
    RC_ASSERT(id->front() == '<');
    RC_ASSERT(id->back() == '>');
    RC_ASSERT(id->size() <= max_message_id);
  }
}

RC_GTEST_PROP(header_value_prop, the_scan_limit_is_a_prefix, (const std::string& raw)) {
  const auto limit = *rc::gen::inRange<std::size_t>(0, raw.size() + 2);
  RC_ASSERT(header_value(raw, "Subject", limit) ==
            header_value(raw.substr(0, std::min(limit, raw.size())), "Subject"));
}

RC_GTEST_PROP(header_value_prop, folding_round_trips, ()) {
  std::vector<std::string> words = *rc::gen::nonEmpty(
      rc::gen::container<std::vector<std::string>>(rc::gen::nonEmpty(gen_value())));
  std::string value;
  for (const auto& w : words) value += (value.empty() ? "" : " ") + w;
  const std::string eol = *rc::gen::element<std::string>("\r\n", "\n");
  const auto every = *rc::gen::inRange<std::size_t>(0, 4);
  const std::string name = *rc::gen::element<std::string>("Subject", "subject", "SUBJECT");
  const std::string msg = "From: a@example.com" + eol + name + ": " + fold(value, eol, every) +
                          eol + "To: b@example.com" + eol + eol + "Subject: body" + eol;
  RC_ASSERT(header_value(msg, "Subject") == std::optional<std::string>(value));
}

RC_GTEST_PROP(message_id_prop, bracketed_ids_are_found, ()) {
  const std::string left = *rc::gen::nonEmpty(rc::gen::container<std::string>(
      rc::gen::element('a', 'z', '0', '9', '.', '-', '_', '+', '$')));
  const std::string right = *rc::gen::nonEmpty(
      rc::gen::container<std::string>(rc::gen::element('a', 'z', '0', '.', '-')));
  const std::string id = "<" + left + "@" + right + ">";
  RC_PRE(id.size() <= max_message_id);
  const std::string cfws = *rc::gen::element<std::string>("", " ", " (comment) ", "\r\n ");
  const std::string msg = "Subject: s\r\nMessage-ID:" + cfws + id + cfws + "\r\n\r\nbody";
  RC_ASSERT(message_id(msg) == std::optional<std::string>(id));
}

}  // namespace
}  // namespace mailroom::mime
