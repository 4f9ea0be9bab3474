// delivery_method/delivery_options and arbitration_method/arbitration_options
// of one mailbox.
#include "config/parse.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <span>
#include <vector>

namespace mailroom::config::detail {
namespace {

// Keys each delivery method reads from delivery_options; used to tell "belongs
// to another method" apart from "unknown".
constexpr std::string_view sidekiq_keys[] = {
    "redis_url",         "redis_db",         "namespace", "sentinels", "sentinel_username",
    "sentinel_password", "redis_ssl_params", "queue",     "worker"};
constexpr std::string_view postback_keys[] = {"delivery_url",    "url",
                                              "delivery_token",  "token",
                                              "username",        "delivery_username",
                                              "password",        "delivery_password",
                                              "content_type",    "jwt_auth_header",
                                              "jwt_secret_path", "jwt_algorithm",
                                              "jwt_issuer",      "open_timeout",
                                              "read_timeout",    "ssl"};
constexpr std::string_view logger_keys[] = {"log_path"};
constexpr std::string_view que_keys[] = {
    "host",     "port",      "database",  "username",        "password",         "queue",
    "priority", "job_class", "pool_size", "connect_timeout", "statement_timeout"};
constexpr std::string_view letter_opener_keys[] = {"location"};

const char* method_name(delivery_method m) {
  switch (m) {
    case delivery_method::postback:
      return "postback";
    case delivery_method::sidekiq:
      return "sidekiq";
    case delivery_method::logger:
      return "logger";
    case delivery_method::noop:
      return "noop";
    case delivery_method::que:
      return "que";
    case delivery_method::letter_opener:
      return "letter_opener";
  }
  return "";
}

std::span<const std::string_view> keys_of(delivery_method m) {
  switch (m) {
    case delivery_method::postback:
      return postback_keys;
    case delivery_method::sidekiq:
      return sidekiq_keys;
    case delivery_method::logger:
      return logger_keys;
    case delivery_method::que:
      return que_keys;
    case delivery_method::letter_opener:
      return letter_opener_keys;
    case delivery_method::noop:
      break;
  }
  return {};
}

// Keys of other methods (and not of this one) are warned about as unused.
void warn_other_method_keys(map_view& opts, delivery_method method) {
  const std::string why = fmt::format("is not used by delivery_method {}", method_name(method));
  const auto own = keys_of(method);
  std::vector<std::string_view> other;
  for (auto m : {delivery_method::postback, delivery_method::sidekiq, delivery_method::logger,
                 delivery_method::que, delivery_method::letter_opener}) {
    if (m == method) continue;
    for (auto k : keys_of(m))
      if (std::find(own.begin(), own.end(), k) == own.end() &&
          std::find(other.begin(), other.end(), k) == other.end())
        other.push_back(k);
  }
  opts.warn_unused(other, why);
}

// An http(s) URL with a host. The URL itself is never echoed: it may carry
// credentials.
bool valid_http_url(std::string_view url) {
  auto sep = url.find("://");
  if (sep == std::string_view::npos) return false;
  std::string scheme(url.substr(0, sep));
  std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (scheme != "http" && scheme != "https") return false;
  auto rest = url.substr(sep + 3);
  auto authority = rest.substr(0, rest.find_first_of("/?#"));
  if (auto at = authority.rfind('@'); at != std::string_view::npos) {
    authority = authority.substr(at + 1);
  }
  return !authority.empty() && authority.front() != ':';
}

// Reads the first of `keys` present in `m` as a string; later ones are
// reported as shadowed. Returns the entry used.
map_view::entry* read_first_string(map_view& m, std::initializer_list<std::string_view> keys,
                                   std::string& out, bool as_secret = false) {
  map_view::entry* used = nullptr;
  std::string used_name;
  bool failed = false;
  for (auto k : keys) {
    auto* e = m.get(k);  // marks every spelling as known, even after a failure
    if (e == nullptr || e->value.IsNull() || failed) continue;
    if (used != nullptr) {
      if (as_secret && e->value.IsScalar()) m.ctx.add_secret(e->value.Scalar());
      m.ctx.warning(e->line, m.path_of(k),
                    fmt::format("`{}` takes precedence (ignored)", used_name));
      continue;
    }
    if (as_secret) {
      secret s;
      failed = !read_secret(m, k, s);
      out = s.reveal();
    } else {
      failed = !read_string(m, k, out);
    }
    if (failed) continue;
    used = e;
    used_name = std::string(k);
  }
  return used;
}

void read_postback(map_view& mbox, map_view& opts, postback_options& pb) {
  context& ctx = opts.ctx;
  // Legacy mailbox-level keys win over delivery_options, as in mail_room.
  auto present = [](map_view& m, std::string_view k) {
    auto* e = m.get(k);
    return e != nullptr && !e->value.IsNull();
  };
  const bool top_set = present(mbox, "delivery_url");
  const bool any_set = top_set || present(opts, "delivery_url") || present(opts, "url");
  std::string url;
  map_view::entry* used = nullptr;
  std::string used_key;
  if (top_set) {
    for (auto k : {"delivery_url", "url"}) {
      if (auto* e = opts.get(k); e != nullptr && !e->value.IsNull()) {
        ctx.warning(e->line, opts.path_of(k),
                    "the mailbox's top-level delivery_url takes precedence (ignored)");
      }
    }
    if (read_string(mbox, "delivery_url", url)) {
      used = mbox.get("delivery_url");
      used_key = "delivery_url";
    }
  } else if ((used = read_first_string(opts, {"delivery_url", "url"}, url)) != nullptr) {
    used_key = opts.path_of(used->key);
  }
  if (!any_set) {
    ctx.error(opts.line(), opts.path_of("delivery_url"),
              "is required for delivery_method postback");
  } else if (used != nullptr && !valid_http_url(url)) {
    ctx.error(used->line, used_key, "must be an http:// or https:// URL with a host");
  }
  pb.url = url;

  std::string token;
  auto* top_token = mbox.get("delivery_token");
  if (top_token != nullptr && !top_token->value.IsNull()) {
    secret s;
    if (read_secret(mbox, "delivery_token", s)) token = s.reveal();
    for (auto k : {"delivery_token", "token"}) {
      if (auto* e = opts.get(k); e != nullptr && !e->value.IsNull()) {
        if (e->value.IsScalar()) ctx.add_secret(e->value.Scalar());
        ctx.warning(e->line, opts.path_of(k),
                    "the mailbox's top-level delivery_token takes precedence (ignored)");
      }
    }
  } else {
    read_first_string(opts, {"delivery_token", "token"}, token, true);
  }
  pb.token = secret(token);

  std::string password;
  auto* user_entry = read_first_string(opts, {"username", "delivery_username"}, pb.username);
  auto* pass_entry = read_first_string(opts, {"password", "delivery_password"}, password, true);
  pb.password = secret(password);
  if ((user_entry == nullptr) != (pass_entry == nullptr)) {
    auto* e = user_entry != nullptr ? user_entry : pass_entry;
    ctx.warning(e->line, opts.path_of(e->key),
                "Basic auth needs both username and password (ignored)");
  } else if (user_entry != nullptr && !pb.token.empty()) {
    ctx.warning(user_entry->line, opts.path_of(user_entry->key),
                "the delivery token takes precedence over username/password (ignored)");
  }

  // mail_room reads content_type only from delivery_options; the top-level key
  // is accepted as a fallback.
  if (!read_string(opts, "content_type", pb.content_type)) {
    read_string(mbox, "content_type", pb.content_type);
  }

  read_string(opts, "jwt_auth_header", pb.jwt_auth_header);
  read_string(opts, "jwt_secret_path", pb.jwt_secret_path);
  read_string(opts, "jwt_issuer", pb.jwt_issuer);
  if (read_string(opts, "jwt_algorithm", pb.jwt_algorithm) && pb.jwt_algorithm != "HS256") {
    auto* e = opts.get("jwt_algorithm");
    ctx.error(e->line, opts.path_of("jwt_algorithm"),
              "unsupported algorithm " + ctx.shown(e->value) + ": only HS256 is supported");
  }
  auto* header_entry = opts.get("jwt_auth_header");
  auto* path_entry = opts.get("jwt_secret_path");
  if (!pb.jwt_auth_header.empty() && pb.jwt_secret_path.empty()) {
    // mail_room silently sends no JWT then (issue #146); the receiver rejects
    // every message.
    ctx.error(header_entry->line, opts.path_of("jwt_secret_path"),
              "is required when jwt_auth_header is set");
  } else if (pb.jwt_auth_header.empty() && !pb.jwt_secret_path.empty()) {
    ctx.error(path_entry->line, opts.path_of("jwt_auth_header"),
              "is required when jwt_secret_path is set");
  }
  if (!pb.jwt_secret_path.empty()) {
    pb.jwt_secret_path = resolve_path(ctx, pb.jwt_secret_path);
    check_jwt_secret(opts, *path_entry, pb.jwt_secret_path, pb.jwt_issuer);
  }

  double seconds = 0;
  if (read_seconds(opts, "open_timeout", 0.001, 86400, seconds)) {
    pb.connect_timeout = std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
  }
  if (read_seconds(opts, "read_timeout", 0.001, 86400, seconds)) {
    pb.response_timeout = std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
  }
  read_tls(opts, "ssl", pb.tls);
}

void read_sidekiq(map_view& opts, sidekiq_options& sk) {
  context& ctx = opts.ctx;
  read_redis_target(opts, sk.redis, true);
  if (read_string(opts, "queue", sk.queue) && sk.queue.empty()) {
    ctx.error(opts.get("queue")->line, opts.path_of("queue"), "must not be empty");
  }
  auto* worker = opts.get("worker");
  if (worker == nullptr || worker->value.IsNull()) {
    // mail_room would push "class":null, a job Sidekiq cannot run.
    ctx.error(worker != nullptr ? worker->line : opts.line(), opts.path_of("worker"),
              "is required for delivery_method sidekiq (the job class, e.g. EmailReceiverWorker)");
  } else if (read_string(opts, "worker", sk.worker) && sk.worker.empty()) {
    ctx.error(worker->line, opts.path_of("worker"), "must not be empty");
  }
}

void read_que(map_view& opts, que_options& q) {
  context& ctx = opts.ctx;
  if (read_string(opts, "host", q.host) && q.host.empty())
    ctx.error(opts.get("host")->line, opts.path_of("host"), "must not be empty");
  long long n = 0;
  if (read_int(opts, "port", 1, 65535, n)) q.port = static_cast<std::uint16_t>(n);
  read_string(opts, "database", q.database);
  read_string(opts, "username", q.username);
  read_secret(opts, "password", q.password);
  read_string(opts, "queue", q.queue);
  if (read_int(opts, "priority", -32768, 32767, n)) q.priority = static_cast<std::int32_t>(n);
  auto* job_class = opts.get("job_class");
  if (job_class == nullptr || job_class->value.IsNull()) {
    // mail_room would insert a NULL job_class, which every Que schema refuses.
    ctx.error(job_class != nullptr ? job_class->line : opts.line(), opts.path_of("job_class"),
              "is required for delivery_method que (the job class, e.g. EmailReceiverJob)");
  } else if (read_string(opts, "job_class", q.job_class) && q.job_class.empty()) {
    ctx.error(job_class->line, opts.path_of("job_class"), "must not be empty");
  }
  if (read_int(opts, "pool_size", 1, 64, n)) q.pool_size = static_cast<std::size_t>(n);
  if (read_int(opts, "connect_timeout", 1, 3600, n)) q.connect_timeout = std::chrono::seconds(n);
  if (read_int(opts, "statement_timeout", 1, 3600, n))
    q.statement_timeout = std::chrono::seconds(n);
}

// The options mapping of `key`, or an empty one when absent.
YAML::Node options_node(map_view& mbox, std::string_view key, bool& ok) {
  ok = true;
  auto* e = mbox.get(key);
  if (e == nullptr) return YAML::Node(YAML::NodeType::Map);
  if (e->value.IsNull()) {
    mbox.ctx.error(e->line, std::string(key),
                   "must not be null (remove the key to use the default, an empty mapping)");
    ok = false;
  } else if (!e->value.IsMap()) {
    mbox.ctx.error(e->line, std::string(key),
                   "must be a mapping (got " + describe_kind(e->value) + ")");
    ok = false;
  }
  return ok ? e->value : YAML::Node(YAML::NodeType::Map);
}

}  // namespace

void read_delivery(map_view& mbox, mailbox& mb) {
  context& ctx = mbox.ctx;
  std::string name = "postback";
  bool known = true;
  if (read_symbol(mbox, "delivery_method", name, null_means::error)) {
    if (name == "postback") {
      mb.delivery = delivery_method::postback;
    } else if (name == "sidekiq") {
      mb.delivery = delivery_method::sidekiq;
    } else if (name == "logger") {
      mb.delivery = delivery_method::logger;
    } else if (name == "noop") {
      mb.delivery = delivery_method::noop;
    } else if (name == "que") {
      mb.delivery = delivery_method::que;
    } else if (name == "letter_opener") {
      mb.delivery = delivery_method::letter_opener;
    } else {
      known = false;
      auto* e = mbox.get("delivery_method");
      std::string shown = ctx.shown(e->value);
      if (name == "webhook") {
        ctx.error(e->line, "delivery_method",
                  "unknown delivery method `webhook`: GitLab's webhook delivery is "
                  "`postback` in mail_room's configuration");
      } else {
        ctx.error(e->line, "delivery_method",
                  "unknown delivery method " + shown +
                      ": expected postback, sidekiq, que, logger, letter_opener or noop");
      }
    }
  } else if (mbox.has("delivery_method")) {
    known = false;  // null or wrong type, already reported
  }

  bool options_ok = true;
  YAML::Node node = options_node(mbox, "delivery_options", options_ok);
  if (!known || !options_ok) {
    // Reading options for an unknown method would only add noise.
    for (auto k : {"delivery_url", "delivery_token", "content_type", "log_path", "location"}) {
      mbox.ignore(k);
    }
    return;
  }
  auto* opts_entry = mbox.get("delivery_options");
  map_view opts(ctx, node, "delivery_options", opts_entry ? opts_entry->line : mbox.line());

  switch (mb.delivery) {
    case delivery_method::postback:
      read_postback(mbox, opts, mb.postback);
      break;
    case delivery_method::sidekiq:
      read_sidekiq(opts, mb.sidekiq);
      break;
    case delivery_method::logger:
      // mail_room: the top-level log_path wins over delivery_options.log_path.
      if (!read_string(mbox, "log_path", mb.logger_delivery.log_path)) {
        read_string(opts, "log_path", mb.logger_delivery.log_path);
      } else if (auto* e = opts.get("log_path"); e != nullptr) {
        ctx.warning(e->line, opts.path_of("log_path"),
                    "the mailbox's top-level log_path takes precedence (ignored)");
      }
      break;
    case delivery_method::noop:
      break;
    case delivery_method::que:
      read_que(opts, mb.que);
      break;
    case delivery_method::letter_opener:
      // mail_room: the top-level location wins over delivery_options.location.
      if (!read_string(mbox, "location", mb.letter_opener.location)) {
        read_string(opts, "location", mb.letter_opener.location);
      } else if (auto* e = opts.get("location"); e != nullptr) {
        ctx.warning(e->line, opts.path_of("location"),
                    "the mailbox's top-level location takes precedence (ignored)");
      }
      if (mb.letter_opener.location.empty()) {
        auto* e = mbox.get("location");
        ctx.error(e != nullptr ? e->line : opts.line(), "location",
                  "is required for delivery_method letter_opener (the directory for the "
                  "messages)");
      } else {
        mb.letter_opener.location = resolve_path(ctx, mb.letter_opener.location);
      }
      break;
  }

  if (mb.max_job_size > 0 && mb.delivery != delivery_method::sidekiq &&
      mb.delivery != delivery_method::que) {
    ctx.warning(mbox.get("max_job_size")->line, "max_job_size",
                "is only used by delivery_method sidekiq and que (ignored)");
  }

  if (mb.delivery != delivery_method::postback) {
    for (auto k : {"delivery_url", "delivery_token", "content_type"}) {
      if (auto* e = mbox.get(k); e != nullptr) {
        if (e->value.IsScalar() && std::string_view(k) == "delivery_token") {
          ctx.add_secret(e->value.Scalar());
        }
        ctx.warning(e->line, k, "is only used by delivery_method postback (ignored)");
      }
    }
  }
  if (mb.delivery != delivery_method::logger) {
    if (auto* e = mbox.get("log_path"); e != nullptr) {
      ctx.warning(e->line, "log_path",
                  "the top-level log_path is the file of delivery_method logger (ignored); "
                  "the structured log is set with logger: {log_path: ...}");
    }
  }
  if (auto* e = mbox.get("location");
      e != nullptr && mb.delivery != delivery_method::letter_opener) {
    ctx.warning(e->line, "location", "is only used by delivery_method letter_opener (ignored)");
  }

  warn_other_method_keys(opts, mb.delivery);
  opts.warn_unknown();
}

void read_arbitration(map_view& mbox, mailbox& mb) {
  context& ctx = mbox.ctx;
  std::string name;
  bool known = true;
  if (read_symbol(mbox, "arbitration_method", name, null_means::error)) {
    if (name == "noop") {
      mb.arbitration = arbitration_method::noop;
    } else if (name == "redis") {
      mb.arbitration = arbitration_method::redis;
    } else {
      known = false;
      auto* e = mbox.get("arbitration_method");
      ctx.error(e->line, "arbitration_method",
                "unknown arbitration method " + ctx.shown(e->value) + ": expected noop or redis");
    }
  } else if (mbox.has("arbitration_method")) {
    known = false;
  }

  bool options_ok = true;
  YAML::Node node = options_node(mbox, "arbitration_options", options_ok);
  if (!known || !options_ok) return;

  if (mb.arbitration == arbitration_method::noop) {
    if (node.size() > 0) {
      ctx.warning(mbox.get("arbitration_options")->line, "arbitration_options",
                  "is only used by arbitration_method redis (ignored)");
    }
    return;
  }

  auto* opts_entry = mbox.get("arbitration_options");
  map_view opts(ctx, node, "arbitration_options", opts_entry ? opts_entry->line : mbox.line());
  read_redis_target(opts, mb.arbitration_opts.redis, false);
  std::string format;
  if (read_symbol(opts, "key_format", format)) {
    if (format == "scoped") {
      mb.arbitration_opts.key_format = arbitration_key_format::scoped;
    } else if (format == "mail_room") {
      mb.arbitration_opts.key_format = arbitration_key_format::mail_room;
    } else {
      auto* e = opts.get("key_format");
      ctx.error(e->line, opts.path_of("key_format"),
                "unknown key_format " + ctx.shown(e->value) + ": expected scoped or mail_room");
    }
  }
  long long expiration = 0;
  if (read_int(opts, "expiration", 1, 0x7fffffff, expiration)) {
    mb.arbitration_opts.expiration = std::chrono::seconds(expiration);
  }
  long long claim_ttl = 0;
  if (read_int(opts, "claim_ttl", 1, 0x7fffffff, claim_ttl)) {
    mb.arbitration_opts.claim_ttl = std::chrono::seconds(claim_ttl);
  }
  opts.warn_unknown();
}

}  // namespace mailroom::config::detail
