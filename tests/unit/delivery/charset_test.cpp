#include "delivery/charset.hpp"

#include <gtest/gtest.h>

#include <string>

namespace mailroom::delivery {
namespace {

// UTF-8 -> ISO-8859-1 for code points up to U+00FF: the inverse of the fallback.
std::string utf8_to_latin1(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      EXPECT_TRUE(c == 0xC2 || c == 0xC3) << "not a Latin-1 code point at " << i;
      out.push_back(
          static_cast<char>(((c & 0x03) << 6) | (static_cast<unsigned char>(s[++i]) & 0x3F)));
    }
  }
  return out;
}

TEST(Utf8Validation, AcceptsWellFormed) {
  EXPECT_TRUE(is_valid_utf8(""));
  EXPECT_TRUE(is_valid_utf8("plain ASCII text that is longer than eight bytes\r\n"));
  EXPECT_TRUE(
      is_valid_utf8("caf\xC3\xA9 \xE4\xB8\xAD \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF \xEF\xBB\xBF"));
  EXPECT_TRUE(is_valid_utf8(std::string("nul\0inside", 10)));
}

TEST(Utf8Validation, RejectsMalformed) {
  EXPECT_FALSE(is_valid_utf8("caf\xE9"));               // Latin-1 byte
  EXPECT_FALSE(is_valid_utf8("\xC3"));                  // truncated
  EXPECT_FALSE(is_valid_utf8("abcdefgh\xE4\xB8"));      // truncated after the ASCII fast path
  EXPECT_FALSE(is_valid_utf8("\xC0\xAF"));              // overlong '/'
  EXPECT_FALSE(is_valid_utf8("\xE0\x80\xAF"));          // overlong
  EXPECT_FALSE(is_valid_utf8("\xF0\x80\x80\xAF"));      // overlong
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));          // surrogate U+D800
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));      // above U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xF8\x88\x80\x80\x80"));  // 5-byte form
  EXPECT_FALSE(is_valid_utf8("\x80"));                  // lone continuation
  EXPECT_FALSE(is_valid_utf8("\xE4\xB8\x41"));          // bad continuation
}

TEST(ToUtf8, ValidUtf8IsUnchanged) {
  const std::string mail = "Subject: caf\xC3\xA9\r\n\r\n\xE4\xB8\xAD\xE6\x96\x87\r\n";
  const utf8_result r = to_utf8(mail);
  EXPECT_EQ(r.text, mail);
  EXPECT_EQ(r.detected_charset, "");
  EXPECT_FALSE(r.fallback);
}

TEST(ToUtf8, AsUtf8DoesNotCopyValidInput) {
  const std::string mail = "Subject: hello\r\n\r\nbody\r\n";
  utf8_result storage;
  const std::string_view v = as_utf8(mail, storage);
  EXPECT_EQ(v.data(), mail.data());
  EXPECT_EQ(v.size(), mail.size());
  EXPECT_TRUE(storage.text.empty());
}

TEST(ToUtf8, Iso88591MailIsDetectedAndConverted) {
  // A realistic ISO-8859-1 mail: the detector needs some text to be sure.
  const std::string mail =
      "From: =?ISO-8859-1?Q?Ren=E9?= <rene@example.fr>\r\n"
      "Subject: Caf\xE9 r\xE9sum\xE9\r\n"
      "Content-Type: text/plain; charset=ISO-8859-1\r\n"
      "Content-Transfer-Encoding: 8bit\r\n"
      "\r\n"
      "Bonjour \xE0 tous,\r\n"
      "Caf\xE9 r\xE9sum\xE9 : la r\xE9union de l'\xE9quipe aura lieu apr\xE8s le d\xE9jeuner.\r\n"
      "Merci de pr\xE9parer vos id\xE9\x65s et de r\xE9pondre \xE0 ce message avant vendredi.\r\n"
      "Tr\xE8s cordialement, Fran\xE7oise\r\n";
  const utf8_result r = to_utf8(mail);
  EXPECT_TRUE(is_valid_utf8(r.text));
  EXPECT_FALSE(r.fallback) << r.detected_charset;
  EXPECT_TRUE(r.detected_charset == "ISO-8859-1" || r.detected_charset == "windows-1252")
      << r.detected_charset;
  EXPECT_NE(r.text.find("Subject: Caf\xC3\xA9 r\xC3\xA9sum\xC3\xA9\r\n"), std::string::npos);
  EXPECT_NE(r.text.find("Fran\xC3\xA7oise"), std::string::npos);
  EXPECT_EQ(utf8_to_latin1(r.text), mail);
}

TEST(ToUtf8, ShiftJisMailIsConverted) {
  // "日本語のメールです。" repeated, in Shift_JIS.
  std::string mail = "Subject: test\r\nContent-Type: text/plain; charset=Shift_JIS\r\n\r\n";
  for (int i = 0; i < 8; ++i) {
    mail += "\x93\xFA\x96\x7B\x8C\xEA\x82\xCC\x83\x81\x81\x5B\x83\x8B\x82\xC5\x82\xB7\x81\x42\r\n";
  }
  const utf8_result r = to_utf8(mail);
  EXPECT_FALSE(r.fallback);
  EXPECT_EQ(r.detected_charset, "Shift_JIS");
  EXPECT_NE(r.text.find("\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE3\x83\xA1\xE3\x83\xBC"
                        "\xE3\x83\xAB\xE3\x81\xA7\xE3\x81\x99\xE3\x80\x82"),
            std::string::npos);
}

TEST(ToUtf8, GarbageFallsBackToLatin1AndRoundTrips) {
  // Every byte value, NUL included: no charset decodes this as text.
  std::string garbage = "Subject: x\r\n\r\n";
  for (int i = 0; i < 256; ++i) garbage.push_back(static_cast<char>(i));
  const utf8_result r = to_utf8(garbage);
  EXPECT_TRUE(r.fallback);
  EXPECT_EQ(r.detected_charset, "ISO-8859-1");
  EXPECT_TRUE(is_valid_utf8(r.text));
  EXPECT_EQ(utf8_to_latin1(r.text), garbage);
}

TEST(ToUtf8, InvalidUtf8WithoutNulNeverLosesBytes) {
  // Mostly UTF-8 with one stray byte: whatever the detector says, the result
  // is valid UTF-8, and a fallback result gives the original bytes back.
  std::string mail = "Subject: r\xC3\xA9sum\xC3\xA9\r\n\r\n";
  for (int i = 0; i < 10; ++i)
    mail += "Ceci est un r\xC3\xA9sum\xC3\xA9 tr\xC3\xA8s d\xC3\xA9taill\xC3\xA9.\r\n";
  mail += "stray \xFF byte\r\n";
  const utf8_result r = to_utf8(mail);
  EXPECT_TRUE(is_valid_utf8(r.text));
  if (r.fallback) {
    EXPECT_EQ(utf8_to_latin1(r.text), mail);
  }
}

TEST(ToUtf8, Latin1ToUtf8MapsEveryByte) {
  EXPECT_EQ(latin1_to_utf8("A\xE9\xFF\x80"), "A\xC3\xA9\xC3\xBF\xC2\x80");
}

}  // namespace
}  // namespace mailroom::delivery
