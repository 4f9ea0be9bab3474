// One entry of `mailboxes:`: the inbox method, the IMAP fields, logger, then the
// delivery and arbitration blocks (delivery.cpp).
#include "common/duration.hpp"
#include "config/parse.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <limits>
#include <optional>

namespace mailroom::config::detail {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// email, password and name have no default: absent or null is an error
// ("Field :email is required" in mail_room).
void require(map_view& m, std::string_view key) {
  auto* e = m.get(key);
  if (e == nullptr) {
    m.ctx.error(m.line(), std::string(key), "is required");
  } else if (e->value.IsNull()) {
    m.ctx.error(e->line, std::string(key), "is required (got null)");
  }
}

void read_logger(map_view& m, log_destination& out) {
  auto* e = m.get("logger");
  if (e == nullptr || e->value.IsNull()) return;  // mail_room: nil logger = {} = discard
  if (!e->value.IsMap()) {
    m.ctx.error(e->line, "logger",
                "must be a mapping like {log_path: /var/log/mailroom.log} (got " +
                    describe_kind(e->value) + ")");
    return;
  }
  map_view lg(m.ctx, e->value, "logger", e->line);
  std::string path;
  if (read_string(lg, "log_path", path) && !path.empty()) {
    const std::string l = lower(path);
    if (l == "stdout" || l == ":stdout") {
      out.where = log_destination::kind::stdout_;
    } else if (l == "stderr" || l == ":stderr") {
      out.where = log_destination::kind::stderr_;
    } else {
      out.where = log_destination::kind::file;
      out.path = path;
    }
  }
  lg.warn_unknown();
}

// after_delivery and move_to (ours); delete_after_delivery: true is
// after_delivery: delete.
void read_after_delivery(map_view& m, mailbox& mb) {
  context& ctx = m.ctx;
  bool delete_after_delivery = false;
  read_bool(m, "delete_after_delivery", delete_after_delivery, null_means::error);
  if (delete_after_delivery) mb.after_delivery = after_delivery_action::remove;
  std::string action;
  if (read_symbol(m, "after_delivery", action, null_means::error)) {
    const int line = m.get("after_delivery")->line;
    action = lower(action);
    if (action == "seen") {
      mb.after_delivery = after_delivery_action::seen;
    } else if (action == "delete") {
      mb.after_delivery = after_delivery_action::remove;
    } else if (action == "move") {
      mb.after_delivery = after_delivery_action::move;
    } else {
      ctx.error(line, "after_delivery",
                "unknown value " + ctx.shown(m.get("after_delivery")->value) +
                    ": expected seen, delete or move");
    }
    if (delete_after_delivery && mb.after_delivery != after_delivery_action::remove)
      ctx.error(line, "after_delivery",
                "contradicts delete_after_delivery: true (which means after_delivery: delete); "
                "remove one of them");
  }
  if (read_string(m, "move_to", mb.move_to, null_means::error)) {
    auto* e = m.get("move_to");
    if (mb.after_delivery != after_delivery_action::move) {
      ctx.warning(e->line, "move_to", "is only used with after_delivery: move (ignored)");
    } else if (mb.move_to.empty() || mb.move_to.find_first_of("\r\n") != std::string::npos) {
      ctx.error(e->line, "move_to", "must be a folder name on one line");
    } else if (canonical_folder(mb.move_to) == canonical_folder(mb.name)) {
      ctx.error(e->line, "move_to", "must not be the watched folder itself (name)");
    }
  }
  if (mb.after_delivery == after_delivery_action::move && !m.has("move_to")) {
    ctx.error(m.get("after_delivery")->line, "move_to", "is required with after_delivery: move");
  }
}

void read_imap_fields(map_view& m, mailbox& mb) {
  context& ctx = m.ctx;
  require(m, "email");
  // A Graph inbox (IMAP keys written by GitLab's templates are read and
  // ignored) has no password.
  if (mb.auth == auth_method::login && !mb.is_graph()) require(m, "password");
  require(m, "name");
  read_secret(m, "password", mb.password);
  for (auto key : {"email", "name"}) {
    auto* e = m.get(key);
    std::string value;
    if (e != nullptr && read_string(m, key, value) && value.empty()) {
      ctx.error(e->line, key, "must not be empty");
    }
  }

  if (read_string(m, "host", mb.host, null_means::error) && mb.host.empty()) {
    ctx.error(m.get("host")->line, "host", "must not be empty");
  }
  read_port(m, "port", mb.port, null_means::error);
  read_tls(m, "ssl", mb.ssl, null_means::error);
  read_bool(m, "start_tls", mb.start_tls, null_means::error);
  const auto* ssl_entry = m.get("ssl");
  if (mb.start_tls && ssl_entry != nullptr && ssl_entry->value.IsMap()) {
    // ours: `ssl: {ca_file: ...}` with `start_tls: true` is STARTTLS with
    // these TLS settings (a private CA, say). mail_room cannot combine the
    // two at all (it would try implicit TLS and fail), so no working
    // mail_room configuration means anything else by it.
    mb.ssl.enabled = false;
  } else if (mb.ssl.enabled && mb.start_tls) {
    ctx.warning(m.get("start_tls")->line, "start_tls",
                "is true while ssl is enabled: STARTTLS inside TLS is rejected by servers; "
                "use ssl: false with start_tls: true (port 143), or ssl alone (port 993)");
  }

  long long idle = 0;
  if (read_int(m, "idle_timeout", std::numeric_limits<long long>::min(),
               std::numeric_limits<long long>::max(), idle, null_means::error)) {
    auto* e = m.get("idle_timeout");
    if (idle > 1740) {
      ctx.error(e->line, "idle_timeout",
                fmt::format("must be at most 1740 (got {}): Please use an idle timeout smaller "
                            "than 1740 to prevent IMAP server disconnects",
                            ctx.shown(e->value)));
    } else if (idle < 1) {
      ctx.error(e->line, "idle_timeout",
                fmt::format("must be at least 1 second (got {})", ctx.shown(e->value)));
    } else {
      mb.idle_timeout = std::chrono::seconds(idle);
    }
  }

  if (read_string(m, "search_command", mb.search_command, null_means::error)) {
    auto* e = m.get("search_command");
    if (mb.search_command.empty()) {
      ctx.error(e->line, "search_command", "must not be empty");
    } else if (mb.search_command.find_first_of("\r\n") != std::string::npos) {
      // It is sent verbatim: a line break would inject IMAP commands.
      ctx.error(e->line, "search_command", "must be a single line");
    }
  }

  long long limit = 0;
  if (read_int(m, "limit_max_unread", std::numeric_limits<long long>::min(),
               std::numeric_limits<std::uint32_t>::max(), limit, null_means::error)) {
    if (limit < 0) {
      ctx.warning(m.get("limit_max_unread")->line, "limit_max_unread",
                  "is negative, which means no limit (as in mail_room); use 0");
      limit = 0;
    }
    mb.limit_max_unread = static_cast<std::uint32_t>(limit);
  }
  read_bool(m, "expunge_deleted", mb.expunge_deleted, null_means::error);
  read_after_delivery(m, mb);
}

bool read_duration(map_view& m, std::string_view key, long long lo, long long hi,
                   std::chrono::seconds& out) {
  long long v = 0;
  if (!read_int(m, key, lo, hi, v, null_means::error)) return false;
  out = std::chrono::seconds(v);
  return true;
}

// A flag keyword is an atom (RFC 3501 §9: flag-keyword = atom); anything else
// would break the STORE command line.
bool is_atom(std::string_view s) {
  if (s.empty() || s.front() == '\\') return false;
  for (unsigned char c : s) {
    if (c <= 0x20 || c >= 0x7f) return false;
    if (std::string_view("(){%*\"\\]").find(static_cast<char>(c)) != std::string_view::npos)
      return false;
  }
  return true;
}

// A number of seconds, or a duration as the operator commands take it
// ("7d", "12h", "1d12h"); nullopt when malformed.
std::optional<std::chrono::seconds> parse_age(const YAML::Node& v) {
  if (!v.IsScalar()) return std::nullopt;
  const std::string& t = v.Scalar();
  std::string error;
  const bool plain_number =
      !t.empty() && t.size() <= 10 &&
      std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; });
  return parse_duration(plain_number ? t + "s" : t, error);
}

// A keyword that sets messages aside must be an atom, like oversize_keyword.
void read_keyword(map_view& m, std::string_view key, std::string& out) {
  if (read_string(m, key, out, null_means::error) && !is_atom(out)) {
    m.ctx.error(m.get(key)->line, std::string(key),
                "must be an IMAP keyword: letters, digits and $-_. without spaces (got " +
                    m.ctx.shown(m.get(key)->value) + ")");
  }
}

// rejected_folder/keyword, max_message_age and too_old_folder/keyword,
// max_job_size (ours).
void read_set_aside_fields(map_view& m, mailbox& mb) {
  context& ctx = m.ctx;
  read_keyword(m, "rejected_keyword", mb.rejected_keyword);
  read_string(m, "rejected_folder", mb.rejected_folder, null_means::error);
  read_keyword(m, "too_old_keyword", mb.too_old_keyword);
  read_string(m, "too_old_folder", mb.too_old_folder, null_means::error);
  if (auto* e = m.get("max_message_age"); e != nullptr) {
    m.ignore("max_message_age");
    if (e->value.IsNull()) {
      ctx.error(e->line, "max_message_age", "must not be null (leave it out for no limit)");
    } else if (auto age = parse_age(e->value)) {
      mb.max_message_age = *age;
    } else {
      ctx.error(e->line, "max_message_age",
                "must be a duration like 7d, 12h, 30m or a number of seconds (got " +
                    ctx.shown(e->value) + ")");
    }
  }
  if (mb.max_message_age.count() == 0 && m.has("too_old_folder"))
    ctx.warning(m.get("too_old_folder")->line, "too_old_folder",
                "is only used with max_message_age (ignored)");
  long long job = 0;
  if (read_int(m, "max_job_size", 0, 1LL << 40, job, null_means::error))
    mb.max_job_size = static_cast<std::uint64_t>(job);
  // Checked once delivery_method is known (read_delivery).
}

// Our own keys: plaintext LOGIN, timeouts, oversize messages, permanent errors.
void read_safety_fields(map_view& m, mailbox& mb) {
  context& ctx = m.ctx;
  read_bool(m, "allow_plaintext_login", mb.allow_plaintext_login, null_means::error);
  if (!mb.ssl.enabled && !mb.start_tls && !mb.allow_plaintext_login && !mb.is_graph()) {
    auto* e = m.get("ssl");
    ctx.error(e != nullptr ? e->line : m.line(), "ssl",
              "is false and start_tls is not set: LOGIN would send the password unencrypted. "
              "Use ssl: true (port 993) or start_tls: true (port 143), or set "
              "allow_plaintext_login: true for a server on a trusted network");
  }
  read_duration(m, "connect_timeout", 1, 3600, mb.connect_timeout);
  read_duration(m, "command_timeout", 1, 3600, mb.command_timeout);
  read_duration(m, "idle_check_interval", 1, 1740, mb.idle_check_interval);

  long long size = 0;
  if (read_int(m, "max_message_size", 1024, 1LL << 32, size, null_means::error))
    mb.max_message_size = static_cast<std::uint64_t>(size);
  std::string action;
  if (read_symbol(m, "oversize_action", action, null_means::error)) {
    if (action == "flag") {
      mb.on_oversize = oversize_action::flag;
    } else if (action == "move") {
      mb.on_oversize = oversize_action::move;
    } else {
      ctx.error(m.get("oversize_action")->line, "oversize_action",
                "unknown value " + ctx.shown(m.get("oversize_action")->value) +
                    ": expected flag or move");
    }
  }
  if (read_string(m, "oversize_keyword", mb.oversize_keyword, null_means::error) &&
      !is_atom(mb.oversize_keyword)) {
    ctx.error(m.get("oversize_keyword")->line, "oversize_keyword",
              "must be an IMAP keyword: letters, digits and $-_. without spaces (got " +
                  ctx.shown(m.get("oversize_keyword")->value) + ")");
  }
  read_string(m, "oversize_folder", mb.oversize_folder, null_means::error);
  if (mb.on_oversize == oversize_action::move && mb.oversize_folder.empty()) {
    auto* e = m.get("oversize_action");
    ctx.error(e != nullptr ? e->line : m.line(), "oversize_folder",
              "is required with oversize_action: move");
  }

  read_set_aside_fields(m, mb);

  std::string policy;
  if (read_symbol(m, "on_permanent_error", policy, null_means::error)) {
    if (policy == "exit_at_startup") {
      mb.on_permanent_error = permanent_error_policy::exit_at_startup;
    } else if (policy == "retry") {
      mb.on_permanent_error = permanent_error_policy::retry;
    } else if (policy == "exit") {
      mb.on_permanent_error = permanent_error_policy::exit;
    } else {
      ctx.error(m.get("on_permanent_error")->line, "on_permanent_error",
                "unknown value " + ctx.shown(m.get("on_permanent_error")->value) +
                    ": expected exit_at_startup, retry or exit");
    }
  }
}

}  // namespace

mailbox read_mailbox(context& ctx, const YAML::Node& node, std::size_t index) {
  mailbox mb;
  // The label needs email and name, known before any diagnostic; without
  // both (or with odd types) the mailbox is named by its position.
  for (auto it = node.begin(); it != node.end(); ++it) {
    // Copies: the iterator's pair is a temporary.
    const YAML::Node key = it->first;
    const YAML::Node value = it->second;
    if (!key.IsScalar() || !value.IsScalar()) continue;
    const std::string k = key.Scalar();
    if ((k == "email" || k == ":email") && mb.email.empty()) mb.email = value.Scalar();
    if ((k == "name" || k == ":name") && mb.name.empty()) mb.name = value.Scalar();
  }
  ctx.mailbox = !mb.email.empty() && !mb.name.empty() ? mb.config_label()
                                                      : fmt::format("mailboxes[{}]", index);
  map_view m(ctx, node, "");
  mb.where = {ctx.file(), m.line()};

  std::string inbox = "imap";
  if (read_symbol(m, "inbox_method", inbox)) {
    inbox = lower(inbox);
    if (inbox != "imap" && inbox != "microsoft_graph") {
      auto* e = m.get("inbox_method");
      ctx.warning(
          e->line, "inbox_method",
          "unknown inbox_method " + ctx.shown(e->value) + ": using IMAP, as mail_room does");
    }
  }
  if (inbox == "microsoft_graph") mb.inbox = inbox_method::microsoft_graph;
  if (inbox != "microsoft_graph") {
    if (auto* e = m.get("inbox_options"); e != nullptr && !e->value.IsNull()) {
      if (e->value.IsMap()) {
        // client_secret of a Graph block must not leak through later messages.
        for (auto it = e->value.begin(); it != e->value.end(); ++it) {
          const YAML::Node k = it->first;  // a copy: the iterator's pair is a temporary
          const YAML::Node v = it->second;
          if (k.IsScalar() && (k.Scalar() == "client_secret" || k.Scalar() == ":client_secret") &&
              v.IsScalar()) {
            ctx.add_secret(v.Scalar());
          }
        }
      }
      ctx.warning(e->line, "inbox_options", "is only used by Microsoft Graph inboxes (ignored)");
    }
    read_auth(m, mb);
  } else {
    // A Graph inbox authenticates with inbox_options' app credentials.
    m.warn_unused({"auth_method", "oauth2"}, "only used by IMAP inboxes");
  }
  read_imap_fields(m, mb);
  read_safety_fields(m, mb);
  if (mb.is_graph()) {
    read_graph_options(m, m.get("inbox_options"), mb);
  }
  read_logger(m, mb.log);
  read_delivery(m, mb);
  read_arbitration(m, mb);
  m.warn_unknown();
  ctx.mailbox.clear();
  return mb;
}

}  // namespace mailroom::config::detail
