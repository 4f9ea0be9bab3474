// Making a raw message valid UTF-8 for targets that need text (the Sidekiq job
// JSON). mail_room force-tags the bytes as UTF-8; when they are not valid
// UTF-8, CharlockHolmes (ICU's charset detector) guesses the charset and the
// bytes are converted from it. We do the same with ICU directly.
//
// Where mail_room would crash (detection fails, so JSON.generate raises on the
// invalid string) or silently substitute U+FFFD (a lossy conversion), we fall
// back to decoding the bytes as ISO-8859-1 instead: every byte maps to exactly
// one code point (U+0000..U+00FF), so the result is always valid UTF-8 and the
// original bytes can always be recovered by encoding it back to ISO-8859-1.
// The fallback loses nothing; it may only show mojibake for text in another
// charset. Input containing NUL bytes is treated as binary and always takes the
// fallback (the detector would otherwise call it UTF-16/32).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace mailroom::delivery {

struct utf8_result {
  std::string text;              // valid UTF-8
  std::string detected_charset;  // the charset the bytes were decoded from; empty when
                                 // they were already valid UTF-8; "ISO-8859-1" on fallback
  bool fallback = false;         // detection failed or the conversion was not clean
};

// Strict UTF-8 (as Ruby's String#valid_encoding?): no overlong forms, no
// surrogates, nothing above U+10FFFF, no truncated sequences.
bool is_valid_utf8(std::string_view s);

// The length of the well-formed UTF-8 sequence at `p` (1-4), or 0 when the
// byte there starts none; `left` (at least 1) bytes are readable.
std::size_t utf8_sequence_length(const unsigned char* p, std::size_t left);

// The UTF-8 form of `raw`. Valid UTF-8 is returned unchanged (copied into
// `text`; use as_utf8() to avoid the copy).
utf8_result to_utf8(std::string_view raw);

// Like to_utf8() without copying valid input: returns `raw` itself when it is
// valid UTF-8 (leaving `storage` empty), else converts into `storage` and
// returns a view of storage.text. The view lives as long as `raw` or `storage`.
std::string_view as_utf8(std::string_view raw, utf8_result& storage);

// ISO-8859-1 -> UTF-8, byte by byte (the fallback above).
std::string latin1_to_utf8(std::string_view raw);

}  // namespace mailroom::delivery
