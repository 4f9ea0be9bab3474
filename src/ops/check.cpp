// `check`: after editing the config, prove every mailbox and target works:
// connect, log in, select (Graph: get a token, list the folder); PING Redis; reach the webhook;
// decode the JWT secret. One line per check; exit 0 only when all pass. Nothing is delivered and no
// flag changes (EXAMINE).
#include "delivery/que.hpp"
#include "ops/common.hpp"
#include "ops/graph_probe.hpp"
#include "ops/output.hpp"
#include "ops/targets.hpp"

#include <fmt/format.h>

#include <ostream>

namespace mailroom::ops {

namespace asio = boost::asio;

namespace {

struct reporter {
  std::ostream& out;
  std::size_t failed = 0;
  std::size_t passed = 0;

  void line(bool ok, const std::string& subject, const std::string& what, const std::string& text) {
    (ok ? passed : failed)++;
    out << fmt::format("{:<4}  {}  {}: {}\n", ok ? "ok" : "FAIL", subject, what, text);
    out.flush();
  }
};

asio::awaitable<void> check_imap(asio::any_io_executor ex, const config::mailbox& mb,
                                 reporter& rep) {
  imap::client c(ex, mb, client_options_for(ex, mb));
  std::string detail;
  const bool ok = co_await open_mailbox(c, mb, true, detail);
  if (!ok) {
    // The line already names the mailbox.
    const std::string prefix = "mailbox " + mb.label() + ": ";
    if (detail.rfind(prefix, 0) == 0) detail.erase(0, prefix.size());
    rep.line(false, mb.label(), "imap", detail);
    co_return;
  }
  const char* transport = mb.ssl.enabled ? "TLS" : mb.start_tls ? "STARTTLS" : "plain text";
  const std::string login =
      mb.auth == config::auth_method::login
          ? "logged in as " + mb.email
          : fmt::format("authenticated as {} with {} (OAuth2 token from {})", mb.email,
                        mb.auth == config::auth_method::xoauth2 ? "XOAUTH2" : "OAUTHBEARER",
                        mb.oauth2.token_url);
  rep.line(true, mb.label(), "imap",
           fmt::format("{}:{} ({}), {}, EXAMINE {} (UIDVALIDITY {})", mb.host, mb.port, transport,
                       login, mb.name, c.uidvalidity()));
  co_await c.logout();
}

asio::awaitable<void> check_graph(asio::any_io_executor ex, const config::mailbox& mb,
                                  reporter& rep) {
  const graph_report r = co_await probe_graph(ex, mb);
  if (!r.ok) {
    rep.line(false, mb.label(), r.failed_step == "token" ? "graph token" : "graph", r.error);
    co_return;
  }
  rep.line(true, mb.label(), "graph token", "obtained from " + mb.oauth2.token_url);
  rep.line(true, mb.label(), "graph",
           fmt::format("{}, folder {} of {}: {}{} unread", mb.graph.graph_endpoint, mb.name,
                       mb.email, r.unread_capped ? "at least " : "", r.unread));
}

asio::awaitable<void> check_redis(asio::any_io_executor ex, const config::redis_target& target,
                                  const config::mailbox& mb, const char* what, reporter& rep) {
  redis::client r(ex, target);
  const auto p = co_await ping_redis(r);
  rep.line(p.ok, mb.label(), what, p.text);
  co_await r.close();
}

asio::awaitable<int> check(asio::any_io_executor ex, const config::config& cfg,
                           const std::vector<const config::mailbox*>& mailboxes,
                           const invocation& inv) {
  reporter rep{*inv.out};
  rep.line(true, "config", "load",
           fmt::format("{} parsed, {} mailbox(es)", cfg.path, cfg.mailboxes.size()));
  for (const auto* mb : mailboxes) {
    if (mb->is_graph()) {
      co_await check_graph(ex, *mb, rep);
    } else {
      co_await check_imap(ex, *mb, rep);
    }
    switch (mb->delivery) {
      case config::delivery_method::sidekiq:
        co_await check_redis(ex, mb->sidekiq.redis, *mb, "sidekiq redis", rep);
        break;
      case config::delivery_method::postback: {
        const auto p = co_await reach_webhook(mb->postback);
        rep.line(p.ok, mb->label(), "webhook", p.text);
        if (mb->postback.jwt_enabled()) {
          const auto j = check_jwt_secret(mb->postback);
          rep.line(j.ok, mb->label(), "jwt secret", j.text);
        }
        break;
      }
      case config::delivery_method::que: {
        delivery::pg_pool pool(mb->que);
        const delivery::pg_outcome o = co_await pool.probe();
        rep.line(
            !o.ec, mb->label(), "que",
            o.ec ? o.detail : fmt::format("{}: que_jobs ({})", pool.describe(), o.layout_read));
        break;
      }
      case config::delivery_method::letter_opener: {
        const auto w = check_writable_dir(mb->letter_opener.location);
        rep.line(w.ok, mb->label(), "letter_opener", w.text);
        break;
      }
      case config::delivery_method::logger:
      case config::delivery_method::noop:
        break;
    }
    if (mb->arbitration == config::arbitration_method::redis)
      co_await check_redis(ex, mb->arbitration_opts.redis, *mb, "arbitration redis", rep);
  }
  *inv.out << fmt::format("{} check(s) passed, {} failed\n", rep.passed, rep.failed);
  co_return rep.failed == 0 ? exit_ok : exit_failure;
}

}  // namespace

int run_check(const config::config& cfg, const invocation& inv) {
  std::string error;
  const auto mailboxes = select_mailboxes(cfg, inv.mailbox, error);
  if (!error.empty()) {
    *inv.err << "mailroom check: " << error << "\n";
    return exit_usage;
  }
  return run_on_loop([&](asio::any_io_executor ex) { return check(ex, cfg, mailboxes, inv); },
                     *inv.err);
}

}  // namespace mailroom::ops
