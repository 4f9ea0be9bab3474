// GMime set-up and ownership, shared by every user of GMime in the process
// (the operator commands' header listing, the letter_opener delivery).
#pragma once

#include <gmime/gmime.h>

#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace mailroom::gmime {

// g_mime_init() once per process, whichever thread gets here first. An
// inline function: one once_flag for all translation units.
inline void ensure_initialized() {
  static std::once_flag once;
  std::call_once(once, [] { g_mime_init(); });
}

struct gobject_unref {
  void operator()(void* p) const {
    if (p) g_object_unref(p);
  }
};
template <typename T>
using gobject_ptr = std::unique_ptr<T, gobject_unref>;

// `raw` parsed as a message. Raw 8-bit header bytes are read as UTF-8 when
// valid, else ISO-8859-1 (where every byte is a character), as the Sidekiq
// delivery reads such messages. nullptr when GMime finds no message (its first
// line is no header field). The bytes are copied: `raw` need not outlive it.
inline gobject_ptr<GMimeMessage> parse_message(std::string_view raw) {
  ensure_initialized();
  gobject_ptr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(raw.data(), raw.size()));
  gobject_ptr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
  GMimeParserOptions* options = g_mime_parser_options_new();
  const char* charsets[] = {"UTF-8", "ISO-8859-1", nullptr};
  g_mime_parser_options_set_fallback_charsets(options, charsets);
  gobject_ptr<GMimeMessage> msg(g_mime_parser_construct_message(parser.get(), options));
  g_mime_parser_options_free(options);
  return msg;
}

// An address list in its UTF-8 display form ("" when empty); encode = FALSE:
// not RFC 2047 again.
inline std::string address_list_text(InternetAddressList* list) {
  if (!list || internet_address_list_length(list) == 0) return {};
  char* s = internet_address_list_to_string(list, nullptr, FALSE);
  std::string out = s ? s : "";
  g_free(s);
  return out;
}

}  // namespace mailroom::gmime
