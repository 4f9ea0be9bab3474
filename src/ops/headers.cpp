#include "ops/headers.hpp"

#include "common/gmime.hpp"

#include <gmime/gmime.h>

#include <memory>

namespace mailroom::ops {
namespace {

std::string header_text(GMimeObject* obj, const char* name) {
  const char* v = g_mime_object_get_header(obj, name);
  return v ? v : "";
}

}  // namespace

message_headers decode_headers(std::string_view raw) {
  std::string text(raw);
  // The parser needs the end of the header block; HEADER.FIELDS usually sends
  // the blank line, a truncated fetch may not.
  if (text.find("\n\n") == std::string::npos && text.find("\r\n\r\n") == std::string::npos)
    text += "\r\n\r\n";
  message_headers out;
  const auto msg = gmime::parse_message(text);
  if (!msg) return out;

  auto* obj = GMIME_OBJECT(msg.get());
  if (GDateTime* d = g_mime_message_get_date(msg.get())) out.date = g_date_time_to_unix(d);
  out.date_text = header_text(obj, "Date");
  out.from = gmime::address_list_text(g_mime_message_get_from(msg.get()));
  out.to = gmime::address_list_text(g_mime_message_get_to(msg.get()));
  out.cc = gmime::address_list_text(g_mime_message_get_cc(msg.get()));
  if (const char* s = g_mime_message_get_subject(msg.get())) out.subject = s;
  if (const char* id = g_mime_message_get_message_id(msg.get())) out.message_id = id;
  return out;
}

}  // namespace mailroom::ops
