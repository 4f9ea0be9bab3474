#include "ops/headers.hpp"

#include "common/gmime.hpp"

#include <gmime/gmime.h>

#include <memory>
#include <mutex>

namespace mailroom::ops {
namespace {

using gmime::gobject_ptr;


std::string header_text(GMimeObject* obj, const char* name) {
  const char* v = g_mime_object_get_header(obj, name);
  return v ? v : "";
}

}  // namespace

message_headers decode_headers(std::string_view raw) {
  gmime::ensure_initialized();
  std::string text(raw);
  // The parser needs the end of the header block; HEADER.FIELDS usually sends
  // the blank line, a truncated fetch may not.
  if (text.find("\n\n") == std::string::npos && text.find("\r\n\r\n") == std::string::npos)
    text += "\r\n\r\n";
  message_headers out;
  gobject_ptr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(text.data(), text.size()));
  gobject_ptr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
  GMimeParserOptions* options = g_mime_parser_options_new();
  // Raw 8-bit header bytes: UTF-8 when valid, else ISO-8859-1 (where every
  // byte is a character), as the Sidekiq delivery reads such messages.
  const char* charsets[] = {"UTF-8", "ISO-8859-1", nullptr};
  g_mime_parser_options_set_fallback_charsets(options, charsets);
  gobject_ptr<GMimeMessage> msg(g_mime_parser_construct_message(parser.get(), options));
  g_mime_parser_options_free(options);
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
