#include "delivery/charset.hpp"

#include <unicode/ucnv.h>
#include <unicode/ucsdet.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <memory>

namespace mailroom::delivery {

namespace {

struct detector_closer {
  void operator()(UCharsetDetector* d) const { ucsdet_close(d); }
};
struct converter_closer {
  void operator()(UConverter* c) const { ucnv_close(c); }
};
using detector_ptr = std::unique_ptr<UCharsetDetector, detector_closer>;
using converter_ptr = std::unique_ptr<UConverter, converter_closer>;

// The best guess of ICU's detector (what CharlockHolmes::EncodingDetector.detect
// returns as :encoding), or empty.
std::string detect_charset(std::string_view raw) {
  if (raw.size() > static_cast<std::size_t>(INT32_MAX)) return {};
  UErrorCode status = U_ZERO_ERROR;
  detector_ptr det(ucsdet_open(&status));
  if (U_FAILURE(status)) return {};
  ucsdet_setText(det.get(), raw.data(), static_cast<int32_t>(raw.size()), &status);
  if (U_FAILURE(status)) return {};
  const UCharsetMatch* match = ucsdet_detect(det.get(), &status);
  if (U_FAILURE(status) || match == nullptr) return {};
  const char* name = ucsdet_getName(match, &status);
  if (U_FAILURE(status) || name == nullptr) return {};
  return name;
}

// Converts `raw` from `charset` to UTF-8. Both converters stop at the first
// illegal, unmapped or truncated sequence instead of substituting, so a true
// result means nothing was lost or replaced.
bool convert_strict(std::string_view raw, const char* charset, std::string& out) {
  UErrorCode status = U_ZERO_ERROR;
  converter_ptr from(ucnv_open(charset, &status));
  if (U_FAILURE(status)) return false;
  converter_ptr to(ucnv_open("UTF-8", &status));
  if (U_FAILURE(status)) return false;
  ucnv_setToUCallBack(from.get(), UCNV_TO_U_CALLBACK_STOP, nullptr, nullptr, nullptr, &status);
  ucnv_setFromUCallBack(to.get(), UCNV_FROM_U_CALLBACK_STOP, nullptr, nullptr, nullptr, &status);
  if (U_FAILURE(status)) return false;

  // Mail is mostly ASCII, so 1.5x the input is usually enough (double-byte
  // CJK charsets need exactly that); the loop below grows the buffer if not.
  out.assign(raw.size() + raw.size() / 2 + 16, '\0');
  UChar pivot[1024];
  UChar* pivot_source = pivot;
  UChar* pivot_target = pivot;
  const char* source = raw.data();
  const char* const source_limit = raw.data() + raw.size();
  std::size_t written = 0;
  bool reset = true;
  for (;;) {
    char* target = out.data() + written;
    status = U_ZERO_ERROR;
    ucnv_convertEx(to.get(), from.get(), &target, out.data() + out.size(), &source, source_limit,
                   pivot, &pivot_source, &pivot_target, pivot + std::size(pivot), reset,
                   /*flush=*/true, &status);
    reset = false;
    written = static_cast<std::size_t>(target - out.data());
    if (status == U_BUFFER_OVERFLOW_ERROR) {
      // ucnv_convertEx keeps its state across calls: continue with more room.
      out.resize(out.size() * 2);
      continue;
    }
    if (U_FAILURE(status)) return false;
    out.resize(written);
    return true;
  }
}

constexpr bool is_continuation(unsigned char c) {
  return (c & 0xC0) == 0x80;
}

}  // namespace

std::size_t utf8_sequence_length(const unsigned char* p, std::size_t left) {
  const unsigned char c = p[0];
  if (c < 0x80) return 1;
  // Ranges from the Unicode Standard, Table 3-7 (well-formed byte sequences).
  if (c >= 0xC2 && c <= 0xDF) return left >= 2 && is_continuation(p[1]) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3 || !is_continuation(p[1]) || !is_continuation(p[2])) return 0;
    if (c == 0xE0 && p[1] < 0xA0) return 0;  // overlong
    if (c == 0xED && p[1] > 0x9F) return 0;  // surrogates
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4 || !is_continuation(p[1]) || !is_continuation(p[2]) || !is_continuation(p[3]))
      return 0;
    if (c == 0xF0 && p[1] < 0x90) return 0;  // overlong
    if (c == 0xF4 && p[1] > 0x8F) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;  // continuation byte, C0/C1 (overlong) or F5..FF
}

bool is_valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* const end = p + s.size();
  while (p != end) {
    // Mail is mostly ASCII: skip it 8 bytes at a time.
    while (end - p >= 8) {
      std::uint64_t word;
      std::memcpy(&word, p, sizeof word);
      if (word & 0x8080808080808080ULL) break;
      p += 8;
    }
    if (p == end) break;
    const unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    const std::size_t n = utf8_sequence_length(p, static_cast<std::size_t>(end - p));
    if (n == 0) return false;
    p += n;
  }
  return true;
}

std::string latin1_to_utf8(std::string_view raw) {
  std::size_t high = 0;
  for (unsigned char c : raw) high += c >> 7;
  std::string out;
  out.reserve(raw.size() + high);
  for (unsigned char c : raw) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

std::string_view as_utf8(std::string_view raw, utf8_result& storage) {
  storage = utf8_result{};
  if (is_valid_utf8(raw)) return raw;

  // NUL bytes are not text in any charset a mail is written in; the detector
  // may still call them UTF-16 or UTF-32 and "convert" them into nonsense, so
  // such input goes straight to the lossless fallback.
  const bool binary = raw.find('\0') != std::string_view::npos;
  std::string charset = binary ? std::string() : detect_charset(raw);
  // A detector answer of UTF-8 for invalid UTF-8 cannot convert cleanly;
  // convert_strict() rejects it like any other unclean conversion.
  if (!charset.empty() && convert_strict(raw, charset.c_str(), storage.text) &&
      is_valid_utf8(storage.text)) {
    storage.detected_charset = std::move(charset);
    return storage.text;
  }
  storage.text = latin1_to_utf8(raw);
  storage.detected_charset = "ISO-8859-1";
  storage.fallback = true;
  return storage.text;
}

utf8_result to_utf8(std::string_view raw) {
  utf8_result r;
  const std::string_view text = as_utf8(raw, r);
  if (text.data() == raw.data() && r.text.empty()) r.text.assign(raw);
  return r;
}

}  // namespace mailroom::delivery
