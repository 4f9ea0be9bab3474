#include "delivery/job.hpp"

#include "common/json_string.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <stdexcept>

namespace mailroom::delivery {

std::string make_jid() {
  unsigned char bytes[12];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("CSPRNG failure");
  static constexpr char hex[] = "0123456789abcdef";
  std::string out(2 * sizeof bytes, '\0');
  for (std::size_t i = 0; i < sizeof bytes; ++i) {
    out[2 * i] = hex[bytes[i] >> 4];
    out[2 * i + 1] = hex[bytes[i] & 0xf];
  }
  return out;
}

namespace {

// The first 12 bytes of SHA-256(input), in lowercase hex.
std::string jid_of(const std::string& input) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(input.data(), input.size(), digest, &len, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("SHA-256 failure");
  static constexpr char hex[] = "0123456789abcdef";
  std::string out(24, '\0');
  for (std::size_t i = 0; i < 12; ++i) {
    out[2 * i] = hex[digest[i] >> 4];
    out[2 * i + 1] = hex[digest[i] & 0xf];
  }
  return out;
}

}  // namespace

std::string stable_jid(std::string_view server, std::string_view email, std::string_view folder,
                       std::uint32_t uidvalidity, std::uint32_t uid) {
  // NUL-separated: no server, account or folder name can make two tuples
  // collide. v1 had no server.
  std::string input = "mailroom-message-v2";
  input += '\0';
  input += server;
  input += '\0';
  input += email;
  input += '\0';
  input += folder;
  input += '\0';
  input += std::to_string(uidvalidity);
  input += '\0';
  input += std::to_string(uid);
  return jid_of(input);
}

std::string stable_jid(std::string_view server, std::string_view email, std::string_view folder,
                       std::string_view message_id) {
  std::string input = "mailroom-graph-message-v1";
  for (const auto part : {server, email, folder, message_id}) {
    input += '\0';
    input += part;
  }
  return jid_of(input);
}

double epoch_seconds_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string ruby_float_to_s(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";

  // Shortest round-trip digits in scientific form ("-1.7958640943228915e+09"),
  // the same digits Ruby's dtoa mode 0 produces; then laid out as flo_to_s does.
  char sci[64];
  const auto conv = std::to_chars(sci, sci + sizeof sci, value, std::chars_format::scientific);
  std::string_view text(sci, static_cast<std::size_t>(conv.ptr - sci));
  std::string out;
  if (text.front() == '-') {
    out.push_back('-');
    text.remove_prefix(1);
  }
  const std::size_t e_pos = text.find('e');
  std::string digits;
  for (char c : text.substr(0, e_pos)) {
    if (c != '.') digits.push_back(c);
  }
  const int exponent = std::atoi(std::string(text.substr(e_pos + 1)).c_str());
  const int decpt = exponent + 1;  // digits before the decimal point
  const int digs = static_cast<int>(digits.size());
  constexpr int dbl_dig = 15;

  if (decpt > 0 && decpt < digs) {
    out.append(digits, 0, static_cast<std::size_t>(decpt));
    out.push_back('.');
    out.append(digits, static_cast<std::size_t>(decpt));
    return out;
  }
  if (decpt > 0 && decpt <= dbl_dig) {
    out.append(digits);
    out.append(static_cast<std::size_t>(decpt - digs), '0');
    out.append(".0");
    return out;
  }
  if (decpt <= 0 && decpt > -4) {
    out.append("0.");
    out.append(static_cast<std::size_t>(-decpt), '0');
    out.append(digits);
    return out;
  }
  out.push_back(digits[0]);
  out.push_back('.');
  if (digs > 1) {
    out.append(digits, 1);
  } else {
    out.push_back('0');
  }
  char exp_text[16];
  std::snprintf(exp_text, sizeof exp_text, "e%+03d", decpt - 1);
  out.append(exp_text);
  return out;
}

namespace {
constexpr std::string_view k_class = R"({"class":)";
constexpr std::string_view k_args = R"(,"args":[)";
constexpr std::string_view k_queue = R"(],"queue":)";
constexpr std::string_view k_jid = R"(,"jid":)";
constexpr std::string_view k_tail = R"(,"retry":false,"enqueued_at":)";

char* put(char* out, std::string_view s) {
  std::memcpy(out, s.data(), s.size());
  return out + s.size();
}
}  // namespace

sidekiq_job::sidekiq_job(std::string_view worker, std::string_view queue,
                         std::string_view utf8_body, std::string_view jid, double enqueued_at)
    : worker_(worker),
      queue_(queue),
      body_(utf8_body),
      jid_(jid),
      when_(ruby_float_to_s(enqueued_at)),
      size_(k_class.size() + json_string_size(worker) + k_args.size() +
            json_string_size(utf8_body) + k_queue.size() + json_string_size(queue) + k_jid.size() +
            json_string_size(jid) + k_tail.size() + when_.size() + 1) {}

char* sidekiq_job::write(char* out) const {
  out = put(out, k_class);
  out = write_json_string(out, worker_);
  out = put(out, k_args);
  out = write_json_string(out, body_);
  out = put(out, k_queue);
  out = write_json_string(out, queue_);
  out = put(out, k_jid);
  out = write_json_string(out, jid_);
  out = put(out, k_tail);
  out = put(out, when_);
  *out++ = '}';
  return out;
}

std::string make_sidekiq_job(std::string_view worker, std::string_view queue,
                             std::string_view utf8_body, std::string_view jid, double enqueued_at) {
  const sidekiq_job job(worker, queue, utf8_body, jid, enqueued_at);
  std::string out(job.size(), '\0');
  job.write(out.data());
  return out;
}

std::string_view job_text(const mail_message& m, const char* delivery_method, log::logger& logger,
                          utf8_result& storage) {
  // mail_room force-tags the bytes as UTF-8 and converts only invalid ones
  // (mail_room-behaviour §3.2, §3.3); valid bodies are not copied here.
  const std::string_view body = as_utf8(m.body, storage);
  if (storage.fallback) {
    log::fields f;
    f["delivery_method"] = delivery_method;
    f["action"] = "charset not detected, body decoded as ISO-8859-1";
    f["uid"] = m.uid;
    logger.warn(f);
  }
  return body;
}

void log_job_pushed(log::logger& logger, const char* delivery_method) {
  log::fields f;
  f["delivery_method"] = delivery_method;
  f["action"] = "message pushed";
  logger.info(f);
}

}  // namespace mailroom::delivery
