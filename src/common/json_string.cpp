#include "common/json_string.hpp"

#include <array>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace mailroom {

namespace {

// Per byte: 0 = copied as is, otherwise the character after the backslash
// ('u' = \u00XX). Everything >= 0x20 other than '"' and '\' is copied, which is
// what keeps non-ASCII text raw, like JSON.generate without ascii_only.
constexpr std::array<char, 256> escape_table = [] {
  std::array<char, 256> t{};
  for (int c = 0; c < 0x20; ++c) t[c] = 'u';
  t['\b'] = 'b';
  t['\f'] = 'f';
  t['\n'] = 'n';
  t['\r'] = 'r';
  t['\t'] = 't';
  t['"'] = '"';
  t['\\'] = '\\';
  return t;
}();

// Clean stretches of a body (almost all of it: mail is lines of printable
// text) are skipped a block at a time. block_mask() is non-zero when a byte of
// the block must be escaped, and its lowest set bit marks the first such byte
// (bit index / bits_per_byte).
#if defined(__SSE2__)
constexpr std::ptrdiff_t block_size = 16;
constexpr int bits_per_byte = 1;
inline std::uint32_t block_mask(const char* p) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  // Unsigned x <= 0x1f: the saturating subtraction leaves 0.
  const __m128i ctrl = _mm_cmpeq_epi8(_mm_subs_epu8(x, _mm_set1_epi8(0x1f)), _mm_setzero_si128());
  const __m128i quote = _mm_cmpeq_epi8(x, _mm_set1_epi8('"'));
  const __m128i backslash = _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'));
  return static_cast<std::uint32_t>(
      _mm_movemask_epi8(_mm_or_si128(ctrl, _mm_or_si128(quote, backslash))));
}
// Set bits, for masks with few of them (a CR LF per line): without -mpopcnt
// the builtin is a library call.
inline std::size_t bit_count(std::uint32_t m) {
  std::size_t n = 0;
  for (; m != 0; m &= m - 1) ++n;
  return n;
}

// Bit i set when byte i is a control character other than \b \t \n \f \r.
inline std::uint32_t long_escape_mask(const char* p) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i ctrl = _mm_cmpeq_epi8(_mm_subs_epu8(x, _mm_set1_epi8(0x1f)), _mm_setzero_si128());
  // \b \t \n are 0x08-0x0a; \f \r are 0x0c and 0x0d.
  const __m128i b_to_n =
      _mm_cmpeq_epi8(_mm_subs_epu8(_mm_sub_epi8(x, _mm_set1_epi8(0x08)), _mm_set1_epi8(0x02)),
                     _mm_setzero_si128());
  const __m128i f_or_r =
      _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8(0x0c)), _mm_cmpeq_epi8(x, _mm_set1_epi8(0x0d)));
  return static_cast<std::uint32_t>(
      _mm_movemask_epi8(_mm_andnot_si128(_mm_or_si128(b_to_n, f_or_r), ctrl)));
}
#else
// SWAR: "has a byte below n" and "has a zero byte" over 8 bytes. False
// positives only appear above a true one, so the lowest set bit is exact.
constexpr std::ptrdiff_t block_size = 8;
constexpr int bits_per_byte = 8;
inline std::uint64_t block_mask(const char* p) {
  constexpr std::uint64_t ones = 0x0101010101010101ull;
  constexpr std::uint64_t highs = 0x8080808080808080ull;
  std::uint64_t w;
  std::memcpy(&w, p, sizeof w);
  const std::uint64_t below_space = (w - ones * 0x20) & ~w & highs;
  const std::uint64_t q = w ^ (ones * '"');
  const std::uint64_t b = w ^ (ones * '\\');
  return (below_space | ((q - ones) & ~q & highs) | ((b - ones) & ~b & highs)) >> 7;
}
#endif

// Bytes an escaped byte adds to the literal.
inline std::size_t escape_extra(unsigned char c) {
  const char e = escape_table[c];
  return e == 0 ? 0 : (e == 'u' ? 5 : 1);
}

}  // namespace

std::size_t json_string_size(std::string_view s) {
  std::size_t n = s.size() + 2;
  const char* p = s.data();
  const char* const end = p + s.size();
  while (end - p >= block_size) {
#if defined(__SSE2__)
    // The mask is exact here: one bit per escaped byte, each adding one
    // byte ("\n"), except the control characters without a short form,
    // which add five ("\u0001").
    if (const std::uint32_t m = block_mask(p); m != 0) {
      n += bit_count(m);
      if (const std::uint32_t u = long_escape_mask(p) & m; u != 0) n += 4 * bit_count(u);
    }
#else
    if (block_mask(p) != 0) {
      for (std::ptrdiff_t i = 0; i < block_size; ++i)
        n += escape_extra(static_cast<unsigned char>(p[i]));
    }
#endif
    p += block_size;
  }
  for (; p != end; ++p) n += escape_extra(static_cast<unsigned char>(*p));
  return n;
}

char* write_json_string(char* out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  *out++ = '"';
  const char* run = s.data();  // start of the bytes not yet copied
  const char* p = s.data();
  const char* const end = p + s.size();
  while (p != end) {
    if (end - p >= block_size) {
      const auto m = block_mask(p);
      if (m == 0) {
        p += block_size;
        continue;
      }
      p += __builtin_ctzll(m) / bits_per_byte;  // the first byte to escape
    } else if (escape_table[static_cast<unsigned char>(*p)] == 0) {
      ++p;
      continue;
    }
    const auto c = static_cast<unsigned char>(*p);
    const char e = escape_table[c];
    std::memcpy(out, run, static_cast<std::size_t>(p - run));
    out += p - run;
    *out++ = '\\';
    *out++ = e;
    if (e == 'u') {
      *out++ = '0';
      *out++ = '0';
      *out++ = hex[c >> 4];
      *out++ = hex[c & 0xf];
    }
    run = ++p;
  }
  std::memcpy(out, run, static_cast<std::size_t>(end - run));
  out += end - run;
  *out++ = '"';
  return out;
}

void append_json_string(std::string& out, std::string_view s) {
  const std::size_t old = out.size();
  out.resize(old + json_string_size(s));
  write_json_string(out.data() + old, s);
}

}  // namespace mailroom
