// GMime set-up and ownership, shared by every user of GMime in the process
// (the operator commands' header listing, the letter_opener delivery).
#pragma once

#include <gmime/gmime.h>

#include <memory>
#include <mutex>
#include <string>

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
