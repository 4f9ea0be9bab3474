#include "app/health_routes.hpp"

#include <fmt/format.h>

#include <chrono>

namespace mailroom::app {

namespace {

using std::chrono::duration_cast;
using std::chrono::seconds;

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
};

}  // namespace

std::string render_metrics(const std::vector<std::unique_ptr<mailbox::watcher>>& watchers) {
  std::string out;
  for (const auto& m : metrics) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", m.name, help_text(m.help), m.name, m.type);
    for (const auto& w : watchers)
      out += fmt::format("{}{{mailbox=\"{}\"}} {}\n", m.name, label_value(w->mailbox().label()),
                         m.value(*w));
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
