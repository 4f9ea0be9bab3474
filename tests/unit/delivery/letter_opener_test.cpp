#include "delivery/letter_opener.hpp"
#include "deliver_sync.hpp"
#include "delivery/charset.hpp"
#include "delivery/errc.hpp"

#include "support/temp_dir.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace mailroom::delivery {
namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;

using test::deliver_sync;

std::string read_file(const fs::path& path) {
  return test::read_file(path.string());
}

std::vector<fs::path> entries(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// "<%Y%m%dT%H%M%S>.<microseconds>Z_<8 hex digits>", e.g. 20261205T093012.123456Z_0badcafe.
bool is_dir_name(const std::string& name) {
  const std::string shape = "ddddddddTdddddd.ddddddZ_xxxxxxxx";
  if (name.size() != shape.size()) return false;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    const char c = name[i];
    const bool ok = shape[i] == 'd'   ? (c >= '0' && c <= '9')
                    : shape[i] == 'x' ? ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))
                                      : c == shape[i];
    if (!ok) return false;
  }
  return true;
}

mail_message message(std::string body) {
  mail_message m;
  m.mailbox_email = "user@example.com";
  m.mailbox_name = "INBOX";
  m.uidvalidity = 7;
  m.uid = 42;
  m.body = std::move(body);
  return m;
}

const std::string rich_message =
    "From: =?ISO-8859-1?Q?J=FCrgen_M=FCller?= <juergen@example.com>\r\n"
    "To: Ann <ann@example.org>, bob@example.org\r\n"
    "Cc: carol@example.net\r\n"
    "Subject: =?ISO-8859-1?Q?Gr=FC=DFe_aus_K=F6ln?=\r\n"
    "Date: Sat, 05 Dec 2026 09:30:12 +0000\r\n"
    "Message-ID: <rich@example.com>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
    "\r\n"
    "--outer\r\n"
    "Content-Type: text/plain; charset=ISO-8859-1\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "Sch=F6ne Gr=FC=DFe! <script>alert(1)</script> & \"more\"\r\n"
    "--outer\r\n"
    "Content-Type: application/pdf; name=\"report.pdf\"\r\n"
    "Content-Disposition: attachment; filename=\"report.pdf\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "SGVsbG8sIFBERiE=\r\n"  // "Hello, PDF!" (11 bytes)
    "--outer\r\n"
    "Content-Type: text/plain; name=\"<img src=x onerror=alert(1)>.txt\"\r\n"
    "Content-Disposition: attachment\r\n"
    "\r\n"
    "notes\r\n"
    "--outer--\r\n";

class LetterOpenerTest : public ::testing::Test {
 protected:
  letter_opener_deliverer make(const fs::path& location) {
    config::letter_opener_options opts;
    opts.location = location.string();
    return letter_opener_deliverer(opts, log::logger::discard());
  }

  // Delivers `m` and returns the one new directory it made.
  fs::path deliver_one(const mail_message& m) {
    auto d = make(location_);
    const auto before = fs::exists(location_) ? entries(location_) : std::vector<fs::path>{};
    const result r = deliver_sync(d, m);
    EXPECT_TRUE(r.ok()) << r.detail;
    const auto after = entries(location_);
    EXPECT_EQ(after.size(), before.size() + 1);
    for (const auto& p : after) {
      if (std::find(before.begin(), before.end(), p) == before.end()) return p;
    }
    ADD_FAILURE() << "no new directory";
    return {};
  }

  mailroom::test::temp_dir tmp_{"mailroom-letter-opener"};
  const fs::path root_ = tmp_.path();
  fs::path location_ = root_ / "letters";
};

TEST_F(LetterOpenerTest, ClassName) {
  auto d = make(location_);
  EXPECT_STREQ(d.class_name(), "MailRoom::Delivery::LetterOpener");
}

TEST_F(LetterOpenerTest, WritesRawMessageAndDecodedIndex) {
  const fs::path dir = deliver_one(message(rich_message));
  EXPECT_TRUE(is_dir_name(dir.filename().string())) << dir;
  EXPECT_EQ(read_file(dir / "message.eml"), rich_message);
  // Only the two files: no temporary file is left.
  EXPECT_EQ(entries(dir), (std::vector<fs::path>{dir / "index.html", dir / "message.eml"}));

  const std::string html = read_file(dir / "index.html");
  EXPECT_TRUE(is_valid_utf8(html));
  EXPECT_NE(html.find("Grüße aus Köln"), std::string::npos) << html;  // RFC 2047 subject
  EXPECT_NE(html.find("Jürgen Müller"), std::string::npos) << html;
  EXPECT_NE(html.find("ann@example.org"), std::string::npos);
  EXPECT_NE(html.find("bob@example.org"), std::string::npos);
  EXPECT_NE(html.find("carol@example.net"), std::string::npos);
  EXPECT_NE(html.find("Sat, 05 Dec 2026 09:30:12 +0000"), std::string::npos);
  // The quoted-printable ISO-8859-1 part, in UTF-8 and escaped.
  EXPECT_NE(html.find("Schöne Grüße! &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;more&quot;"),
            std::string::npos)
      << html;
  EXPECT_NE(html.find("report.pdf (11 bytes)"), std::string::npos) << html;
  EXPECT_NE(html.find("&lt;img src=x onerror=alert(1)&gt;.txt"), std::string::npos) << html;
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<img"), std::string::npos);
  EXPECT_NE(html.find("<a href=\"message.eml\">"), std::string::npos);
}

TEST_F(LetterOpenerTest, PrefersPlainTextAndNeverRendersHtml) {
  const std::string alternative =
      "Subject: alt\r\n"
      "Content-Type: multipart/alternative; boundary=b\r\n\r\n"
      "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain version\r\n"
      "--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html version</p>\r\n"
      "--b--\r\n";
  std::string html = letter_opener_index_html(alternative);
  EXPECT_NE(html.find("plain version"), std::string::npos);
  EXPECT_EQ(html.find("html version"), std::string::npos);

  const std::string html_only =
      "Subject: html\r\n"
      "Content-Type: text/html; charset=utf-8\r\n\r\n"
      "<p onclick=\"x()\">Hello</p><script>steal()</script>\r\n";
  html = letter_opener_index_html(html_only);
  EXPECT_NE(html.find("&lt;p onclick=&quot;x()&quot;&gt;Hello&lt;/p&gt;&lt;script&gt;"),
            std::string::npos)
      << html;
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<p onclick"), std::string::npos);
}

TEST_F(LetterOpenerTest, MessageWithoutHeaders) {
  const std::string body = "just some text\nwithout any header <b>at all</b>\n";
  const fs::path dir = deliver_one(message(body));
  EXPECT_EQ(read_file(dir / "message.eml"), body);
  const std::string html = read_file(dir / "index.html");
  EXPECT_NE(html.find("</html>"), std::string::npos);
  // Not MIME: the raw text is shown, escaped.
  EXPECT_NE(html.find("just some text\nwithout any header &lt;b&gt;at all&lt;/b&gt;"),
            std::string::npos)
      << html;
  EXPECT_EQ(html.find("<b>"), std::string::npos);
}

TEST_F(LetterOpenerTest, EmptyMessage) {
  const fs::path dir = deliver_one(message(""));
  ASSERT_TRUE(fs::exists(dir / "message.eml"));
  EXPECT_EQ(fs::file_size(dir / "message.eml"), 0u);
  const std::string html = read_file(dir / "index.html");
  EXPECT_NE(html.find("</html>"), std::string::npos);
  EXPECT_NE(html.find("(0 bytes)"), std::string::npos);
}

TEST_F(LetterOpenerTest, BinaryJunkAndInvalidUtf8) {
  std::string junk = "Subject: \xff\xfe bad \xc3\x28\r\nFrom: <<<@@@>>>\r\n";
  junk += "Content-Type: text/plain; charset=utf-8\r\n";
  junk += "Content-Transfer-Encoding: base64\r\n\r\n";
  junk += "!!!not base64!!!\r\n";
  for (int i = 0; i < 512; ++i) junk += static_cast<char>(i % 256);
  const fs::path dir = deliver_one(message(junk));
  EXPECT_EQ(read_file(dir / "message.eml"), junk);
  EXPECT_TRUE(is_valid_utf8(read_file(dir / "index.html")));

  // Unknown charsets, broken multiparts, NUL bytes, control characters.
  const std::vector<std::string> odd = {
      std::string("Content-Type: text/plain; charset=x-no-such-charset\r\n\r\n\xe9t\xe9\r\n"),
      "Content-Type: text/plain; charset=\r\n\r\nx\0y\x01z\x7f\r\n"s,
      "Content-Type: multipart/mixed; boundary=zzz\r\n\r\n--zzz\r\nContent-Type: text/plain\r\n",
      "Content-Type: multipart/mixed\r\n\r\nno boundary at all\r\n",
      "Content-Type: text/plain; charset=utf-16\r\n\r\nabc",
      "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n",
      std::string(100000, '\n'),
      "\r\n\r\n\r\n",
      ":\r\n: :\r\n\tcontinued\r\n",
  };
  for (const auto& raw : odd) {
    const std::string html = letter_opener_index_html(raw);
    EXPECT_TRUE(is_valid_utf8(html));
    EXPECT_NE(html.find("</html>"), std::string::npos);
  }
}

TEST_F(LetterOpenerTest, BoundsTheIndex) {
  std::string big = "Subject: big\r\nContent-Type: text/plain\r\n\r\n";
  big.append(1 << 20, 'a');
  std::string html = letter_opener_index_html(big);
  EXPECT_LT(html.size(), letter_opener_max_text + 8192);
  EXPECT_NE(html.find("cut here"), std::string::npos);

  std::string many = "Content-Type: multipart/mixed; boundary=b\r\n\r\n";
  for (std::size_t i = 0; i < letter_opener_max_attachments + 5; ++i) {
    many += "--b\r\nContent-Disposition: attachment; filename=f" + std::to_string(i) +
            ".bin\r\n\r\nx\r\n";
  }
  many += "--b--\r\n";
  html = letter_opener_index_html(many);
  EXPECT_NE(html.find("f999.bin"), std::string::npos);
  EXPECT_EQ(html.find("f1000.bin"), std::string::npos);
  EXPECT_NE(html.find("and 5 more"), std::string::npos);
}

TEST_F(LetterOpenerTest, DistinctDirectoriesAndLocationCreated) {
  location_ = root_ / "a" / "b" / "c";  // created like mkdir -p
  auto d = make(location_);
  for (int i = 0; i < 5; ++i) {
    const result r = deliver_sync(d, message("Subject: same\r\n\r\nsame\r\n"));
    ASSERT_TRUE(r.ok()) << r.detail;
  }
  const auto dirs = entries(location_);
  ASSERT_EQ(dirs.size(), 5u);
  std::set<fs::path> unique(dirs.begin(), dirs.end());
  EXPECT_EQ(unique.size(), 5u);
  for (const auto& dir : dirs) {
    EXPECT_EQ(read_file(dir / "message.eml"), "Subject: same\r\n\r\nsame\r\n");
    EXPECT_TRUE(fs::exists(dir / "index.html"));
  }
}

TEST_F(LetterOpenerTest, UnwritableLocationFails) {
  std::ofstream(root_ / "file") << "a regular file";
  auto d = make(root_ / "file" / "letters");
  const result r = deliver_sync(d, message(rich_message));
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.ec, make_error_code(errc::target_unavailable));
  EXPECT_NE(r.detail.find("file/letters"), std::string::npos) << r.detail;
  EXPECT_EQ(entries(root_), std::vector<fs::path>{root_ / "file"});
}

TEST_F(LetterOpenerTest, WriteFailureRemovesPartlyWrittenDirectory) {
  // A file size limit makes write() fail with EFBIG after the directory exists.
  ASSERT_TRUE(fs::create_directories(location_));
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit old_limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  rlimit small = old_limit;
  small.rlim_cur = 16;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  auto d = make(location_);
  const result r = deliver_sync(d, message(rich_message));
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);

  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.ec, make_error_code(errc::target_unavailable));
  EXPECT_NE(r.detail.find("message.eml"), std::string::npos) << r.detail;
  EXPECT_TRUE(entries(location_).empty());
}

TEST_F(LetterOpenerTest, EmptyLocationIsMisconfigured) {
  auto d = make("");
  const result r = deliver_sync(d, message("Subject: x\r\n\r\n"));
  EXPECT_EQ(r.ec, make_error_code(errc::misconfigured));
}

}  // namespace
}  // namespace mailroom::delivery
