#include "delivery/letter_opener.hpp"

#include "common/gmime.hpp"
#include "delivery/charset.hpp"

#include <fcntl.h>
#include <gmime/gmime.h>
#include <sys/stat.h>
#include <unicode/ucnv.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <vector>

namespace mailroom::delivery {
namespace {

// ---------------------------------------------------------------------------
// GMime helpers

using gmime::gobject_ptr;

struct converter_closer {
  void operator()(UConverter* c) const { ucnv_close(c); }
};
using converter_ptr = std::unique_ptr<UConverter, converter_closer>;

// Raw bytes of a charset-converted part read for the body text: enough for
// letter_opener_max_text bytes of UTF-8 from any charset (at most 4 input
// bytes per character).
constexpr std::size_t max_text_input = 4 * letter_opener_max_text;

std::optional<std::string> header_text(GMimeObject* obj, const char* name) {
  // The value is unfolded and RFC 2047 decoded (raw 8-bit bytes through the
  // parser's fallback charsets).
  const char* v = g_mime_object_get_header(obj, name);
  if (!v) return std::nullopt;
  return std::string(v);
}

// An address field: the parsed list in display form, or the field's text when
// nothing in it parses as an address.
std::optional<std::string> address_field(GMimeMessage* msg, InternetAddressList* list,
                                         const char* name) {
  auto text = header_text(GMIME_OBJECT(msg), name);
  if (!text) return std::nullopt;
  std::string parsed = gmime::address_list_text(list);
  if (!parsed.empty()) return parsed;
  return text;
}

// The decoded (transfer encoding removed) content of a leaf part; at most
// `cap` bytes are kept, `total` is the full decoded length.
std::string decoded_content(GMimePart* part, std::size_t cap, std::size_t& total) {
  total = 0;
  GMimeDataWrapper* content = g_mime_part_get_content(part);
  if (!content) return {};
  gobject_ptr<GMimeStream> mem(g_mime_stream_mem_new());
  if (g_mime_data_wrapper_write_to_stream(content, mem.get()) < 0) return {};
  GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem.get()));
  if (!bytes) return {};
  total = bytes->len;
  return std::string(reinterpret_cast<const char*>(bytes->data), std::min<std::size_t>(cap, total));
}

// The decoded size of a leaf part, counted without keeping the bytes.
std::size_t decoded_size(GMimePart* part) {
  GMimeDataWrapper* content = g_mime_part_get_content(part);
  if (!content) return 0;
  gobject_ptr<GMimeStream> null(g_mime_stream_null_new());
  if (g_mime_data_wrapper_write_to_stream(content, null.get()) < 0) return 0;
  return GMIME_STREAM_NULL(null.get())->written;
}

// The size of an attached message (message/rfc822) as it would be saved.
std::size_t message_size(GMimeMessagePart* part) {
  GMimeMessage* inner = g_mime_message_part_get_message(part);
  if (!inner) return 0;
  gobject_ptr<GMimeStream> null(g_mime_stream_null_new());
  if (g_mime_object_write_to_stream(GMIME_OBJECT(inner), nullptr, null.get()) < 0) return 0;
  return GMIME_STREAM_NULL(null.get())->written;
}

// ---------------------------------------------------------------------------
// Charset conversion: always valid UTF-8 out; bytes that do not convert become
// U+FFFD.

bool ascii_iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) {
             return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
           };
           return lower(x) == lower(y);
         });
}

// Converts with ICU's substituting callbacks. False when ICU knows no such
// charset.
bool convert_lenient(std::string_view raw, const char* charset, std::string& out) {
  UErrorCode status = U_ZERO_ERROR;
  converter_ptr conv(ucnv_open(charset, &status));
  if (U_FAILURE(status) || !conv) return false;
  // WHATWG (and every mail reader) reads ISO-8859-1 as windows-1252, whose
  // 0x80..0x9F are printable characters rather than C1 controls.
  const char* canonical = ucnv_getName(conv.get(), &status);
  if (U_SUCCESS(status) && canonical && ascii_iequals(canonical, "ISO-8859-1")) {
    status = U_ZERO_ERROR;
    converter_ptr cp1252(ucnv_open("windows-1252", &status));
    if (U_SUCCESS(status) && cp1252) conv = std::move(cp1252);
  }
  status = U_ZERO_ERROR;
  const auto len = static_cast<int32_t>(raw.size());
  out.assign(raw.size() * 3 + 16, '\0');
  int32_t n = ucnv_toAlgorithmic(UCNV_UTF8, conv.get(), out.data(),
                                 static_cast<int32_t>(out.size()), raw.data(), len, &status);
  if (status == U_BUFFER_OVERFLOW_ERROR && n > 0) {
    status = U_ZERO_ERROR;
    ucnv_resetToUnicode(conv.get());
    out.assign(static_cast<std::size_t>(n), '\0');
    n = ucnv_toAlgorithmic(UCNV_UTF8, conv.get(), out.data(), n, raw.data(), len, &status);
  }
  if (U_FAILURE(status) || n < 0) {
    out.clear();
    return false;
  }
  out.resize(static_cast<std::size_t>(n));
  return true;
}

// `raw` (at most max_text_input bytes) from the part's declared charset to
// UTF-8. Without a usable declaration (none, US-ASCII, a name no converter
// knows) the bytes are taken as UTF-8 when valid, else the charset is guessed
// as the Sidekiq delivery does.
std::string text_to_utf8(std::string_view raw, const std::string& declared) {
  std::string out;
  const bool usable = !declared.empty() && !ascii_iequals(declared, "us-ascii") &&
                      !ascii_iequals(declared, "ascii");
  if (usable) {
    if (convert_lenient(raw, declared.c_str(), out)) return out;
    // GMime knows aliases ICU may not (and the reverse).
    const char* alias = g_mime_charset_iconv_name(declared.c_str());
    if (alias && declared != alias && convert_lenient(raw, alias, out)) return out;
  }
  return to_utf8(raw).text;
}

// ---------------------------------------------------------------------------
// HTML output

// Appends `text` HTML-escaped, with ill-formed UTF-8 and control characters
// (other than tab and line breaks) replaced by U+FFFD; at most `limit` bytes of
// `text` are taken, ending on a character boundary. Returns the bytes taken.
std::size_t append_escaped(std::string& out, std::string_view text,
                           std::size_t limit = std::string_view::npos) {
  static constexpr std::string_view replacement = "\xEF\xBF\xBD";
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t size = std::min(text.size(), limit);
  std::size_t i = 0;
  while (i < size) {
    const unsigned char c = p[i];
    const std::size_t n = utf8_sequence_length(p + i, text.size() - i);
    if (n == 0) {
      out += replacement;
      ++i;
      continue;
    }
    if (i + n > size) break;  // the limit falls inside this character
    if (n == 1) {
      switch (c) {
        case '&':
          out += "&amp;";
          break;
        case '<':
          out += "&lt;";
          break;
        case '>':
          out += "&gt;";
          break;
        case '"':
          out += "&quot;";
          break;
        case '\'':
          out += "&#39;";
          break;
        case '\t':
        case '\n':
          out += static_cast<char>(c);
          break;
        case '\r':
          // CRLF becomes LF; a bare CR is a line break too.
          if (i + 1 >= text.size() || p[i + 1] != '\n') out += '\n';
          break;
        default:
          if (c < 0x20 || c == 0x7F) {
            out += replacement;
          } else {
            out += static_cast<char>(c);
          }
      }
    } else if (n == 2 && c == 0xC2 && p[i + 1] < 0xA0) {
      out += replacement;  // C1 controls (U+0080..U+009F)
    } else {
      out.append(text.data() + i, n);
    }
    i += n;
  }
  return i;
}

struct attachment {
  std::string name;  // UTF-8 as GMime decoded it; escaped on output
  std::size_t size = 0;
};

struct extracted {
  std::optional<std::string> from, to, cc, subject, date;
  bool have_body = false;
  bool body_is_html = false;
  bool body_unparsed = false;  // not MIME: the raw message as text
  std::string body;            // UTF-8, up to letter_opener_max_text plus one character
  bool body_truncated = false;
  std::vector<attachment> attachments;
  std::size_t more_attachments = 0;  // beyond letter_opener_max_attachments
};

bool is_attachment(GMimeObject* obj, const char* filename) {
  if (filename && *filename) return true;
  GMimeContentDisposition* d = g_mime_object_get_content_disposition(obj);
  return d && g_mime_content_disposition_is_attachment(d);
}

void add_attachment(extracted& e, std::string name, std::size_t (*size)(GMimeObject*),
                    GMimeObject* obj) {
  if (e.attachments.size() >= letter_opener_max_attachments) {
    ++e.more_attachments;
    return;
  }
  e.attachments.push_back(attachment{std::move(name), size(obj)});
}

void take_body(extracted& e, GMimePart* part, bool html) {
  std::size_t total = 0;
  const std::string raw = decoded_content(part, max_text_input, total);
  const char* cs = g_mime_object_get_content_type_parameter(GMIME_OBJECT(part), "charset");
  std::string text = text_to_utf8(raw, cs ? cs : "");
  e.have_body = true;
  e.body_is_html = html;
  e.body_truncated = total > raw.size() || text.size() > letter_opener_max_text;
  e.body = std::move(text);
}

// Walks the MIME tree in order (without descending into attached messages):
// the first inline text/plain part is the body, else the first inline
// text/html part; parts with a file name or an attachment disposition are
// listed.
void walk(GMimeMessage* msg, extracted& e) {
  GMimeObject* root = g_mime_message_get_mime_part(msg);
  if (!root) return;
  GMimePart* first_html = nullptr;
  std::vector<GMimeObject*> stack{root};
  while (!stack.empty()) {
    GMimeObject* obj = stack.back();
    stack.pop_back();
    if (GMIME_IS_MULTIPART(obj)) {
      auto* mp = GMIME_MULTIPART(obj);
      for (int i = g_mime_multipart_get_count(mp) - 1; i >= 0; --i) {
        if (GMimeObject* child = g_mime_multipart_get_part(mp, i)) stack.push_back(child);
      }
      continue;
    }
    if (GMIME_IS_MESSAGE_PART(obj)) {
      const char* name = g_mime_object_get_content_disposition_parameter(obj, "filename");
      if (!name) name = g_mime_object_get_content_type_parameter(obj, "name");
      add_attachment(
          e, name && *name ? name : "(attached message)",
          [](GMimeObject* o) { return message_size(GMIME_MESSAGE_PART(o)); }, obj);
      continue;
    }
    if (!GMIME_IS_PART(obj)) continue;
    auto* part = GMIME_PART(obj);
    const char* filename = g_mime_part_get_filename(part);
    if (is_attachment(obj, filename)) {
      add_attachment(
          e, filename && *filename ? filename : "(unnamed)",
          [](GMimeObject* o) { return decoded_size(GMIME_PART(o)); }, obj);
      continue;
    }
    GMimeContentType* ct = g_mime_object_get_content_type(obj);
    if (!ct) continue;
    if (!e.have_body && g_mime_content_type_is_type(ct, "text", "plain")) {
      take_body(e, part, false);
    } else if (!first_html && g_mime_content_type_is_type(ct, "text", "html")) {
      first_html = part;
    }
  }
  if (!e.have_body && first_html) take_body(e, first_html, true);
}

extracted extract(std::string_view raw) {
  extracted e;
  const auto msg = gmime::parse_message(raw);
  if (!msg) {
    // GMime gives up on a message whose first line is not a header field
    // (text without headers, junk): show the start of the raw bytes instead.
    if (!raw.empty()) {
      const std::string_view head = raw.substr(0, max_text_input);
      e.have_body = true;
      e.body_unparsed = true;
      e.body = to_utf8(head).text;
      e.body_truncated = raw.size() > head.size() || e.body.size() > letter_opener_max_text;
    }
    return e;
  }

  e.from = address_field(msg.get(), g_mime_message_get_from(msg.get()), "From");
  e.to = address_field(msg.get(), g_mime_message_get_to(msg.get()), "To");
  e.cc = address_field(msg.get(), g_mime_message_get_cc(msg.get()), "Cc");
  if (const char* s = g_mime_message_get_subject(msg.get())) e.subject = s;
  e.date = header_text(GMIME_OBJECT(msg.get()), "Date");
  walk(msg.get(), e);
  return e;
}

void header_row(std::string& out, const char* label, const std::optional<std::string>& value) {
  if (!value) return;
  out += "<tr><th>";
  out += label;
  out += "</th><td>";
  const std::size_t taken = append_escaped(out, *value, letter_opener_max_header);
  if (taken < value->size()) out += "\xE2\x80\xA6";  // an ellipsis
  out += "</td></tr>\n";
}

std::string render(const extracted& e, std::size_t eml_size) {
  std::string out;
  out.reserve(4096 + std::min(e.body.size(), letter_opener_max_text) * 11 / 10);
  out +=
      "<!DOCTYPE html>\n"
      "<html>\n<head>\n<meta charset=\"utf-8\">\n"
      // Nothing from the message may load or run, whatever slips through.
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
      "style-src 'unsafe-inline'\">\n"
      "<title>";
  if (e.subject && !e.subject->empty()) {
    append_escaped(out, *e.subject, 256);
  } else {
    out += "(no subject)";
  }
  out +=
      "</title>\n<style>\n"
      "body { font-family: sans-serif; margin: 1em 2em; }\n"
      "table.headers th { text-align: right; vertical-align: top; padding-right: 1em; }\n"
      "table.headers td { white-space: pre-wrap; word-break: break-word; }\n"
      "pre { white-space: pre-wrap; word-break: break-word; border-top: 1px solid #ccc; "
      "padding-top: 1em; }\n"
      ".note { color: #666; font-style: italic; }\n"
      "</style>\n</head>\n<body>\n<table class=\"headers\">\n";
  header_row(out, "From", e.from);
  header_row(out, "To", e.to);
  header_row(out, "Cc", e.cc);
  header_row(out, "Subject", e.subject);
  header_row(out, "Date", e.date);
  out += "</table>\n";

  if (!e.attachments.empty()) {
    out += "<h3>Attachments</h3>\n<ul class=\"attachments\">\n";
    for (const auto& a : e.attachments) {
      out += "<li>";
      append_escaped(out, a.name, 1024);
      out += " (" + std::to_string(a.size) + " bytes)</li>\n";
    }
    if (e.more_attachments > 0) {
      out += "<li class=\"note\">and " + std::to_string(e.more_attachments) + " more</li>\n";
    }
    out += "</ul>\n";
  }

  if (e.have_body) {
    if (e.body_is_html) out += "<p class=\"note\">HTML part, shown as source:</p>\n";
    if (e.body_unparsed) out += "<p class=\"note\">Not a MIME message; the raw text:</p>\n";
    out += "<pre>";
    append_escaped(out, e.body, letter_opener_max_text);
    out += "</pre>\n";
    if (e.body_truncated) {
      out += "<p class=\"note\">The text is cut here; the whole message is in message.eml.</p>\n";
    }
  } else {
    out += "<p class=\"note\">No text part.</p>\n";
  }
  out += "<p><a href=\"message.eml\">message.eml</a> (" + std::to_string(eml_size) +
         " bytes)</p>\n</body>\n</html>\n";
  return out;
}

// ---------------------------------------------------------------------------
// Files

std::string utc_stamp() {
  using namespace std::chrono;
  const auto now = system_clock::now();
  const auto usec = duration_cast<microseconds>(now.time_since_epoch()).count() % 1000000;
  const std::time_t t = system_clock::to_time_t(now);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%S", &utc);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%06dZ", stamp, static_cast<int>(usec));
  return out;
}

std::string random_hex8() {
  thread_local std::mt19937 gen{std::random_device{}()};
  char out[9];
  std::snprintf(out, sizeof out, "%08x", static_cast<unsigned>(gen()));
  return out;
}

std::string failure_text(const char* what, const std::string& path, int err) {
  return std::string(what) + " " + path + ": " + std::strerror(err);
}

// Writes `data` to dir/name through a temporary file renamed into place.
// Returns an empty string, or what failed.
std::string write_file(const std::string& dir, const char* name, std::string_view data) {
  const std::string final_path = dir + "/" + name;
  const std::string tmp_path = dir + "/." + name + ".tmp";
  const int fd =
      ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return failure_text("cannot create", tmp_path, errno);
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return failure_text("cannot write", tmp_path, err);
    }
    done += static_cast<std::size_t>(n);
  }
  // close() reports delayed write errors (NFS, some quota setups).
  if (::close(fd) != 0 && errno != EINTR) return failure_text("cannot write", tmp_path, errno);
  if (::rename(tmp_path.c_str(), final_path.c_str()) != 0) {
    return failure_text("cannot rename to", final_path, errno);
  }
  return {};
}

}  // namespace

std::string letter_opener_index_html(std::string_view raw_message) {
  extracted e;
  try {
    e = extract(raw_message);
  } catch (const std::exception&) {
    // Out of memory while decoding: the page still links the message.
    e = extracted{};
  }
  return render(e, raw_message.size());
}

letter_opener_deliverer::letter_opener_deliverer(const config::letter_opener_options& opts,
                                                 std::shared_ptr<log::logger> logger)
    : location_(opts.location), logger_(std::move(logger)) {}

boost::asio::awaitable<result> letter_opener_deliverer::deliver(const mail_message& m) {
  if (location_.empty()) {
    co_return result{make_error_code(errc::misconfigured), "letter_opener location is not set"};
  }
  // The page first: it needs no file system, and a failure below then leaves
  // nothing half made.
  const std::string index = letter_opener_index_html(m.body);

  std::error_code fs_ec;
  std::filesystem::create_directories(location_, fs_ec);
  if (fs_ec) {
    co_return result{make_error_code(errc::target_unavailable),
                     "cannot create directory " + location_ + ": " + fs_ec.message()};
  }

  // <time>_<random>: unique even for two deliveries in the same microsecond,
  // from this process or another, since mkdir() fails on an existing name.
  const std::string stamp = utc_stamp();
  std::string dir;
  int err = 0;
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::string candidate = location_ + "/" + stamp + "_" + random_hex8();
    if (::mkdir(candidate.c_str(), 0755) == 0) {
      dir = std::move(candidate);
      break;
    }
    err = errno;
    if (err != EEXIST) {
      co_return result{make_error_code(errc::target_unavailable),
                       failure_text("cannot create directory", candidate, err)};
    }
  }
  if (dir.empty()) {
    co_return result{make_error_code(errc::target_unavailable),
                     failure_text("cannot create a directory in", location_, err)};
  }

  std::string failed = write_file(dir, "message.eml", m.body);
  if (failed.empty()) failed = write_file(dir, "index.html", index);
  if (!failed.empty()) {
    // Leave nothing behind that a later retry would duplicate.
    std::error_code rm_ec;
    std::filesystem::remove_all(dir, rm_ec);
    if (rm_ec && logger_) {
      log::fields f;
      f["delivery_method"] = "LetterOpener";
      f["action"] = "cannot remove partly written directory";
      f["path"] = dir;
      f["error"] = rm_ec.message();
      logger_->warn(f);
    }
    co_return result{make_error_code(errc::target_unavailable), std::move(failed)};
  }
  // mail_room logs nothing for a letter_opener delivery.
  co_return result{};
}

}  // namespace mailroom::delivery
