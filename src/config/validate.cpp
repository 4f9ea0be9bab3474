// Checks that look outside the YAML tree: files the service will read later,
// and relations between mailboxes.
#include "config/parse.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace mailroom::config::detail {
namespace {

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// The JWT key file is small; anything bigger is not a base64 key.
constexpr std::uintmax_t max_secret_file = 64 * 1024;

}  // namespace

std::string resolve_path(const context& ctx, const std::string& p) {
  std::filesystem::path path(p);
  if (path.is_relative()) path = std::filesystem::path(ctx.base_dir) / path;
  return path.lexically_normal().string();
}

bool strict_base64_decode(std::string_view in, std::string& out) {
  out.clear();
  if (in.size() % 4 != 0) return false;
  for (std::size_t i = 0; i < in.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      char c = in[i + k];
      if (c == '=') {
        // Padding only in the last quantum, only at its end.
        if (i + 4 != in.size() || k < 2) return false;
        ++pad;
        v[k] = 0;
        continue;
      }
      if (pad > 0) return false;
      v[k] = base64_value(c);
      if (v[k] < 0) return false;
    }
    const unsigned bits = (static_cast<unsigned>(v[0]) << 18) |
                          (static_cast<unsigned>(v[1]) << 12) | (static_cast<unsigned>(v[2]) << 6) |
                          static_cast<unsigned>(v[3]);
    // Ruby's strict decoder also rejects non-zero bits left over by padding.
    if ((pad == 1 && (bits & 0xff) != 0) || (pad == 2 && (bits & 0xffff) != 0)) return false;
    out += static_cast<char>((bits >> 16) & 0xff);
    if (pad < 2) out += static_cast<char>((bits >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(bits & 0xff);
  }
  return true;
}

void check_jwt_secret(map_view& opts, const map_view::entry& path_entry, const std::string& path,
                      const std::string& issuer) {
  context& ctx = opts.ctx;
  const std::string key = opts.path_of("jwt_secret_path");
  const int line = path_entry.line;
  const std::string shown = ctx.shown(path_entry.value);
  namespace fs = std::filesystem;

  std::error_code ec;
  auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    ctx.error(line, key,
              fmt::format("file {} does not exist or cannot be reached{}", shown,
                          ec ? ": " + ec.message() : ""));
    return;
  }
  if (!fs::is_regular_file(st)) {
    ctx.error(line, key, fmt::format("{} is not a regular file", shown));
    return;
  }
  auto size = fs::file_size(path, ec);
  if (!ec && size > max_secret_file) {
    ctx.error(line, key,
              fmt::format("{} is larger than {} bytes: it should hold a base64 key", shown,
                          max_secret_file));
    return;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ctx.error(line, key, fmt::format("cannot read {}: {}", shown, std::strerror(errno)));
    return;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string content = ss.str();
  ctx.add_secret(content);

  // The postback delivery reads it as mail_room does:
  // Base64.strict_decode64(File.read(path).chomp).
  if (content.ends_with("\r\n")) {
    content.resize(content.size() - 2);
  } else if (content.ends_with('\n') || content.ends_with('\r')) {
    content.pop_back();
  }
  std::string decoded;
  if (!strict_base64_decode(content, decoded)) {
    ctx.error(line, key,
              fmt::format("{} does not hold strict base64 (one line, no spaces, with padding); "
                          "the file must contain the base64-encoded key",
                          shown));
    return;
  }
  if (decoded.empty()) {
    ctx.error(line, key, fmt::format("{} holds an empty key", shown));
    return;
  }
  if (issuer == "gitlab-mailroom" && decoded.size() != 32) {
    ctx.warning(line, key,
                fmt::format("{} decodes to {} bytes, but GitLab expects a 32-byte key", shown,
                            decoded.size()));
  }
  const auto perms = st.permissions();
  if ((perms & (fs::perms::group_read | fs::perms::others_read)) != fs::perms::none) {
    ctx.warning(line, key,
                fmt::format("{} is readable by group or others (mode {:04o}); restrict it to the "
                            "service user (chmod 600)",
                            shown, static_cast<unsigned>(perms) & 0777));
  }
}

void check_mailboxes(context& ctx, const std::vector<mailbox>& mailboxes) {
  // Two entries for the same folder of the same account on the same server
  // would compete for every message and share one arbitration key, one job id
  // and one metrics series per message: the configuration must say which one
  // it means. The same account and folder on two servers are two mailboxes.
  for (std::size_t i = 0; i < mailboxes.size(); ++i) {
    const auto& b = mailboxes[i];
    if (b.email.empty() || b.name.empty()) continue;
    for (std::size_t j = 0; j < i; ++j) {
      const auto& a = mailboxes[j];
      if (a.email == b.email && canonical_folder(a.name) == canonical_folder(b.name) &&
          a.server() == b.server()) {
        ctx.mailbox = b.config_label();
        ctx.error(b.where.line, "",
                  fmt::format("the same folder on {} is already configured at line {}; "
                              "each mailbox (email, name, host, port) may appear once",
                              b.server(), a.where.line));
        break;
      }
    }
  }
  ctx.mailbox.clear();
}

}  // namespace mailroom::config::detail
