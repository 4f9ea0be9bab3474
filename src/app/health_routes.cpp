#include "app/health_routes.hpp"

#include "common/unix_time.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#ifndef MAILROOM_VERSION
#define MAILROOM_VERSION "0.1.0"
#endif

namespace mailroom::app {

namespace {

using std::chrono::duration_cast;
using std::chrono::seconds;

// Taken when the program starts (static initialisation).
const double process_start =
    std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();

const char* state_name(mailbox::watcher_state s) {
  switch (s) {
    case mailbox::watcher_state::connecting:
      return "connecting";
    case mailbox::watcher_state::connected:
      return "connected";
    case mailbox::watcher_state::backing_off:
      return "backing off";
    case mailbox::watcher_state::stopped:
      return "stopped";
  }
  return "unknown";
}

// The text exposition format escapes backslash and newline in HELP texts,
// and double quotes too in label values. An unescaped \Deleted in a HELP text
// reads as an invalid escape sequence, which strict parsers (promtool) reject.
std::string escaped(std::string_view s, bool quotes) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || (quotes && c == '"')) {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}
std::string label_value(std::string_view s) {
  return escaped(s, true);
}
std::string help_text(std::string_view s) {
  return escaped(s, false);
}

struct metric_def {
  const char* name;
  const char* type;
  const char* help;
  double (*value)(const mailbox::watcher&);
};

const metric_def metrics[] = {
    {"mailroom_messages_delivered_total", "counter",
     "Messages acknowledged by the delivery target, then flagged.",
     [](const mailbox::watcher& w) { return double(w.counters().delivered); }},
    {"mailroom_delivery_failures_total", "counter",
     "Deliveries that failed; the message stayed unseen for a retry.",
     [](const mailbox::watcher& w) { return double(w.counters().delivery_failures); }},
    {"mailroom_messages_already_delivered_total", "counter",
     "Messages found unflagged with a delivered record; flagged without a second delivery.",
     [](const mailbox::watcher& w) { return double(w.counters().already_delivered); }},
    {"mailroom_messages_claimed_elsewhere_total", "counter",
     "Messages skipped because another instance held their claim.",
     [](const mailbox::watcher& w) { return double(w.counters().claimed_elsewhere); }},
    {"mailroom_claims_lost_total", "counter",
     "Claims found expired when their release or delivered record was written (left alone).",
     [](const mailbox::watcher& w) { return double(w.counters().claims_lost); }},
    {"mailroom_arbitration_write_errors_total", "counter",
     "Releases and delivered records the arbitration store did not take.",
     [](const mailbox::watcher& w) { return double(w.counters().arbitration_write_errors); }},
    {"mailroom_messages_oversize_total", "counter",
     "Messages larger than max_message_size, flagged or moved aside.",
     [](const mailbox::watcher& w) { return double(w.counters().oversize); }},
    {"mailroom_messages_too_old_total", "counter",
     "Messages older than max_message_age, flagged or moved aside.",
     [](const mailbox::watcher& w) { return double(w.counters().too_old); }},
    {"mailroom_messages_rejected_total", "counter",
     "Messages the delivery target refused for good, flagged or moved aside.",
     [](const mailbox::watcher& w) { return double(w.counters().rejected); }},
    {"mailroom_sessions_total", "counter", "IMAP sessions that reached SELECT.",
     [](const mailbox::watcher& w) { return double(w.counters().connects); }},
    {"mailroom_tls_sessions_resumed_total", "counter",
     "IMAP sessions whose TLS handshake resumed an earlier session (no certificate exchange).",
     [](const mailbox::watcher& w) { return double(w.counters().tls_resumed); }},
    {"mailroom_connection_errors_total", "counter",
     "IMAP sessions ended by an error (followed by a reconnect).",
     [](const mailbox::watcher& w) { return double(w.counters().connection_errors); }},
    {"mailroom_login_failures_total", "counter",
     "IMAP sessions whose login the server refused (credentials, token, or a passing refusal).",
     [](const mailbox::watcher& w) { return double(w.counters().login_failures); }},
    {"mailroom_message_bytes_total", "counter", "Message bytes fetched from the mailbox.",
     [](const mailbox::watcher& w) { return double(w.counters().bytes_fetched); }},
    {"mailroom_uidvalidity_changes_total", "counter", "UIDVALIDITY changes seen at SELECT.",
     [](const mailbox::watcher& w) { return double(w.counters().uidvalidity_changes); }},
    {"mailroom_expunged_leftovers_total", "counter",
     "Messages left flagged \\Deleted by an earlier session, expunged at session start.",
     [](const mailbox::watcher& w) { return double(w.counters().expunged_leftovers); }},
    {"mailroom_mailbox_owned", "gauge",
     "1 while this instance watches the mailbox (always, without a cluster section).",
     [](const mailbox::watcher& w) { return w.active() ? 1.0 : 0.0; }},
    {"mailroom_mailbox_owned_since_timestamp_seconds", "gauge",
     "When this instance took the mailbox's cluster lease (Unix time); 0 when it does not hold it "
     "or without a cluster section.",
     [](const mailbox::watcher& w) { return double(w.active_since()); }},
    {"mailroom_mailbox_connected", "gauge", "1 while the folder is selected.",
     [](const mailbox::watcher& w) { return w.connected() ? 1.0 : 0.0; }},
    {"mailroom_mailbox_target_ok", "gauge", "0 after a delivery failed because of the target.",
     [](const mailbox::watcher& w) { return w.target_ok() ? 1.0 : 0.0; }},
    {"mailroom_mailbox_seconds_since_progress", "gauge",
     "Seconds since the watcher last moved forward.",
     [](const mailbox::watcher& w) {
       return std::chrono::duration<double>(w.stalled_for()).count();
     }},
    {"mailroom_mailbox_unseen_messages", "gauge",
     "Unseen messages in the folder, counted after each pass (what STATUS UNSEEN gives); 0 where "
     "another instance owns the mailbox.",
     [](const mailbox::watcher& w) { return double(w.health().unseen.messages); }},
    {"mailroom_mailbox_oldest_unseen_age_seconds", "gauge",
     "Age of the oldest unseen message (from its arrival in the mailbox); 0 when none.",
     [](const mailbox::watcher& w) {
       const auto& u = w.health().unseen;
       if (u.messages == 0 || u.oldest_arrival <= 0) return 0.0;
       return double(std::max<std::int64_t>(0, unix_seconds() - u.oldest_arrival));
     }},
    {"mailroom_mailbox_last_pass_timestamp_seconds", "gauge",
     "When the last pass over the folder ended (Unix time); 0 before the first.",
     [](const mailbox::watcher& w) { return double(w.health().unseen.counted_at); }},
    {"mailroom_tls_certificate_expiry_timestamp_seconds", "gauge",
     "notAfter of the IMAP server's certificate at the last TLS handshake (Unix time); 0 without "
     "TLS.",
     [](const mailbox::watcher& w) { return double(w.health().certificate_expiry); }},
};

struct histogram_def {
  const char* name;
  const char* help;
  const histogram& (*of)(const mailbox::watcher&);
};

const histogram_def histograms[] = {
    {"mailroom_delivery_latency_seconds",
     "From a message's arrival in the mailbox (INTERNALDATE, whole seconds) to the delivery "
     "target's acknowledgement.",
     [](const mailbox::watcher& w) -> const histogram& { return w.health().delivery_latency; }},
    {"mailroom_target_response_seconds",
     "One delivery request to the target (Sidekiq Redis, webhook, que), whatever its answer.",
     [](const mailbox::watcher& w) -> const histogram& { return w.health().target_response; }},
};

// Prometheus's float format: integers without a fraction, +Inf spelt so.
std::string number(double v) {
  return fmt::format("{}", v);
}

}  // namespace

std::string render_metrics(const std::vector<std::unique_ptr<mailbox::watcher>>& watchers) {
  std::string out;
  out +=
      "# HELP mailroom_build_info The running mailroom's version (always 1).\n"
      "# TYPE mailroom_build_info gauge\n";
  out += fmt::format("mailroom_build_info{{version=\"{}\"}} 1\n", label_value(MAILROOM_VERSION));
  out +=
      "# HELP process_start_time_seconds Start time of the process since the Unix epoch.\n"
      "# TYPE process_start_time_seconds gauge\n";
  out += fmt::format("process_start_time_seconds {:.3f}\n", process_start);
  for (const auto& m : metrics) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", m.name, help_text(m.help), m.name, m.type);
    for (const auto& w : watchers)
      out += fmt::format("{}{{mailbox=\"{}\"}} {}\n", m.name, label_value(w->mailbox().label()),
                         number(m.value(*w)));
  }
  // Mailboxes that share OAuth2 credentials share one token source, and
  // each shows its counts: aggregate with max by the credentials, not sum.
  out +=
      "# HELP mailroom_token_renewals_total OAuth2 access-token requests of the mailbox's token "
      "source, by result.\n# TYPE mailroom_token_renewals_total counter\n";
  for (const auto& w : watchers) {
    const auto t = w->tokens();
    const auto mb = label_value(w->mailbox().label());
    out += fmt::format("mailroom_token_renewals_total{{mailbox=\"{}\",result=\"ok\"}} {}\n", mb,
                       t.renewals);
    out += fmt::format("mailroom_token_renewals_total{{mailbox=\"{}\",result=\"failed\"}} {}\n", mb,
                       t.failures);
  }
  for (const auto& h : histograms) {
    out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", h.name, help_text(h.help), h.name);
    for (const auto& w : watchers) {
      const histogram& x = h.of(*w);
      const auto mb = label_value(w->mailbox().label());
      for (std::size_t i = 0; i < x.bounds().size(); ++i)
        out += fmt::format("{}_bucket{{mailbox=\"{}\",le=\"{}\"}} {}\n", h.name, mb,
                           number(x.bounds()[i]), x.cumulative(i));
      out += fmt::format("{}_bucket{{mailbox=\"{}\",le=\"+Inf\"}} {}\n", h.name, mb, x.count());
      out += fmt::format("{}_sum{{mailbox=\"{}\"}} {}\n", h.name, mb, number(x.sum()));
      out += fmt::format("{}_count{{mailbox=\"{}\"}} {}\n", h.name, mb, x.count());
    }
  }
  return out;
}

observability::route_handler make_health_routes(
    const config::config& cfg, const std::vector<std::unique_ptr<mailbox::watcher>>& watchers,
    const observability::health_server& health) {
  const auto stuck_after = cfg.health.stuck_after;
  return [&watchers, &health,
          stuck_after](std::string_view path) -> std::optional<observability::http_reply> {
    if (path == "/liveness") {
      if (!health.running()) return observability::http_reply{500, "Not running\n"};
      for (const auto& w : watchers) {
        if (!w->active()) continue;  // cluster mode: another instance watches it
        const auto stalled = duration_cast<seconds>(w->stalled_for());
        if (stalled > stuck_after)
          return observability::http_reply{
              500, fmt::format("Stuck: mailbox {} made no progress for {} s ({})\n",
                               w->mailbox().label(), stalled.count(), state_name(w->state()))};
      }
      return observability::http_reply{200, "OK\n"};
    }
    if (path == "/readiness") {
      bool ready = health.running();
      std::string body;
      for (const auto& w : watchers) {
        if (!w->active()) {  // cluster mode: another instance watches it
          body += fmt::format("{}: watched by another instance\n", w->mailbox().label());
          continue;
        }
        const bool ok = w->connected() && w->target_ok();
        ready = ready && ok;
        body += fmt::format("{}: {}{}{}\n", w->mailbox().label(), state_name(w->state()),
                            w->target_ok() ? "" : ", delivery target failing",
                            ok || w->last_error().empty() ? "" : " (" + w->last_error() + ")");
      }
      return observability::http_reply{ready ? 200u : 503u,
                                       (ready ? "Ready\n" : "Not ready\n") + body};
    }
    if (path == "/metrics") {
      return observability::http_reply{200, render_metrics(watchers), "text/plain; version=0.0.4"};
    }
    return std::nullopt;
  };
}

}  // namespace mailroom::app
