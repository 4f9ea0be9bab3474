#include "app/coordinator.hpp"
#include "common/allocator.hpp"

#include "app/health_routes.hpp"
#include "app/heap_trimmer.hpp"

#include "arbitration/noop_arbitrator.hpp"
#include "arbitration/redis_arbitrator.hpp"
#include "auth/token_source.hpp"
#include "cluster/node.hpp"
#include "common/logger.hpp"
#include "delivery/http_client.hpp"
#include "delivery/letter_opener.hpp"
#include "delivery/logger_delivery.hpp"
#include "delivery/noop.hpp"
#include "delivery/postback.hpp"
#include "delivery/que.hpp"
#include "delivery/sidekiq.hpp"
#include "mailbox/graph_watcher.hpp"
#include "mailbox/imap_watcher.hpp"
#include "observability/health_server.hpp"
#include "redis/client.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <csignal>
#include <iostream>
#include <map>
#include <memory>
#include <vector>

namespace mailroom::app {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

// Messages handled per batch. Redis takes a whole batch of jobs in one
// pipelined write, so a large batch costs few round trips and few flag
// updates (each UID STORE makes a Maildir server like Dovecot rescan the
// folder: 6-15 ms for 10,000 messages). Webhook requests run a few at a time
// on the HTTP pool, and a batch must be delivered well within claim_ttl, so
// webhook batches stay small. Either way fetch_bytes bounds the memory.
std::size_t batch_size_for(config::delivery_method m) {
  return m == config::delivery_method::postback ? 20 : 500;
}

// Webhook requests run on this many threads. A mailbox sends no more than that
// at once, so that after a failed request the ones not yet sent can be held
// back (at most this many requests per pass reach a failing target).
constexpr std::size_t http_threads = 4;
// Microsoft Graph requests of all Graph mailboxes run on this many threads
// (each mailbox runs up to 4 at once).
constexpr std::size_t graph_threads = 8;

// One client per distinct Redis target, shared by every mailbox that uses it.
class redis_pool {
 public:
  explicit redis_pool(asio::any_io_executor ex) : ex_(ex) {}

  std::shared_ptr<redis::client> get(const config::redis_target& t) {
    std::string key = fmt::format("{}|{}|{}|{}|{}|{}|{}", t.host, t.port, t.db, t.tls, t.username,
                                  t.password.reveal(), t.sentinels.size());
    for (const auto& s : t.sentinels) key += fmt::format("|{}:{}", s.host, s.port);
    auto& slot = clients_[key];
    if (!slot) slot = std::make_shared<redis::client>(ex_, t);
    return slot;
  }

  asio::awaitable<void> close_all() {
    for (auto& [_, c] : clients_) co_await c->close();
  }

 private:
  asio::any_io_executor ex_;
  std::map<std::string, std::shared_ptr<redis::client>> clients_;
};

std::shared_ptr<log::logger> open_log(const config::log_destination& d, std::string& error) {
  switch (d.where) {
    case config::log_destination::kind::discard:
      return log::logger::discard();
    case config::log_destination::kind::stdout_:
      return log::logger::to_stdout();
    case config::log_destination::kind::stderr_:
      return log::logger::to_stderr();
    case config::log_destination::kind::file:
      return log::logger::to_file(d.path, error);
  }
  return log::logger::discard();
}

}  // namespace

int run_service(const config::config& cfg, const run_options& opts) {
  allocator::keep_message_buffers_in_heap();
  asio::io_context ioc(1);
  auto ex = ioc.get_executor();
  redis_pool redis(ex);
  // Shared: the webhook deliveries and the OAuth2 token sources use it.
  std::shared_ptr<delivery::http_client> http;
  // Microsoft Graph's calls (listing, bodies, marks) run on their own pool,
  // so that they do not queue behind webhook deliveries.
  std::shared_ptr<delivery::http_client> graph_http;
  std::map<std::string, std::shared_ptr<auth::oauth2_token_source>> token_sources;
  // One pool of PostgreSQL connections per database the que deliveries use.
  std::vector<std::pair<config::que_options, std::shared_ptr<delivery::pg_pool>>> pg_pools;
  auto pg_pool_for = [&](const config::que_options& q) {
    for (const auto& [o, p] : pg_pools)
      if (delivery::pg_pool::same_database(o, q)) return p;
    pg_pools.emplace_back(q, std::make_shared<delivery::pg_pool>(q));
    return pg_pools.back().second;
  };
  std::vector<std::unique_ptr<mailbox::watcher>> watchers;
  std::shared_ptr<log::logger> first_log;  // the cluster's lines go where mailbox 1's go
  int exit_code = 0;
  auto report_fatal = [&](const std::string& line) {
    exit_code = 1;
    if (opts.on_fatal) opts.on_fatal(line);
  };

  for (const auto& mb : cfg.mailboxes) {
    std::string error;
    auto log = open_log(mb.log, error);
    if (!log) {
      report_fatal(fmt::format("mailbox {}: {}", mb.label(), error));
      return 1;
    }
    if (!first_log) first_log = log;
    std::shared_ptr<delivery::deliverer> deliverer;
    switch (mb.delivery) {
      case config::delivery_method::sidekiq:
        deliverer = std::make_shared<delivery::sidekiq_deliverer>(
            mb.sidekiq, redis.get(mb.sidekiq.redis), log, mb.max_job_size);
        break;
      case config::delivery_method::postback:
        if (!http) http = std::make_shared<delivery::http_client>(http_threads);
        deliverer = std::make_shared<delivery::postback_deliverer>(mb.postback, *http, log);
        break;
      case config::delivery_method::logger:
        deliverer = std::make_shared<delivery::logger_deliverer>(mb.logger_delivery);
        break;
      case config::delivery_method::noop:
        deliverer = std::make_shared<delivery::noop_deliverer>();
        break;
      case config::delivery_method::letter_opener:
        deliverer = std::make_shared<delivery::letter_opener_deliverer>(mb.letter_opener, log);
        break;
      case config::delivery_method::que:
        deliverer = std::make_shared<delivery::que_deliverer>(mb.que, pg_pool_for(mb.que), log,
                                                              mb.max_job_size);
        break;
    }
    std::shared_ptr<arbitration::arbitrator> arbitrator;
    if (mb.arbitration == config::arbitration_method::redis) {
      // The previous version's keys left out the server: they cannot tell
      // this mailbox from the same account and folder on another server.
      const bool unambiguous = std::none_of(
          cfg.mailboxes.begin(), cfg.mailboxes.end(), [&](const config::mailbox& other) {
            return &other != &mb && other.email == mb.email && other.name == mb.name;
          });
      arbitrator = std::make_shared<arbitration::redis_arbitrator>(
          mb.arbitration_opts, redis.get(mb.arbitration_opts.redis), unambiguous);
    } else {
      arbitrator = std::make_shared<arbitration::noop_arbitrator>();
    }
    // One token per set of credentials, however many mailboxes use it.
    auto token_source = [&](const std::shared_ptr<delivery::http_client>& client) {
      auto& source = token_sources[auth::credentials_key(mb.oauth2)];
      if (!source) source = std::make_shared<auth::oauth2_token_source>(ex, mb.oauth2, client);
      return source;
    };
    if (mb.is_graph()) {
      if (!graph_http) graph_http = std::make_shared<delivery::http_client>(graph_threads);
      mailbox::graph_watcher_options gopts;
      gopts.graph.graph_endpoint = mb.graph.graph_endpoint;
      gopts.graph.user = mb.email;
      gopts.graph.folder = mb.name;
      gopts.graph.token_url = mb.oauth2.token_url;
      gopts.graph.connect_timeout = mb.connect_timeout;
      gopts.graph.request_timeout = mb.command_timeout;
      if (mb.limit_max_unread > 0) gopts.graph.max_listed = mb.limit_max_unread;
      gopts.fetch_bytes = std::max<std::uint64_t>(gopts.fetch_bytes, mb.max_message_size);
      gopts.fetch_batch = batch_size_for(mb.delivery);
      if (mb.delivery == config::delivery_method::postback)
        gopts.max_deliveries_in_flight = http_threads;
      watchers.push_back(std::make_unique<mailbox::graph_watcher>(
          ex, mb, graph_http, token_source(graph_http), std::move(deliverer), std::move(arbitrator),
          log, gopts));
      continue;
    }
    mailbox::watcher_options wopts;
    if (mb.auth != config::auth_method::login) {
      if (!http) http = std::make_shared<delivery::http_client>(http_threads);
      wopts.imap.tokens = token_source(http);
    }
    wopts.imap.connect_timeout = mb.connect_timeout;
    wopts.imap.command_timeout = mb.command_timeout;
    // A literal may exceed RFC822.SIZE a little (servers that convert line
    // ends); anything far beyond it is hostile and ends the connection.
    const std::uint64_t literal_cap = mb.max_message_size + mb.max_message_size / 8 + (1u << 20);
    wopts.imap.parser_limits.max_literal_size = static_cast<std::size_t>(literal_cap);
    wopts.imap.parser_limits.max_response_literal_bytes = static_cast<std::size_t>(2 * literal_cap);
    wopts.fetch_bytes = std::max<std::uint64_t>(wopts.fetch_bytes, mb.max_message_size);
    wopts.fetch_batch = batch_size_for(mb.delivery);
    if (mb.delivery == config::delivery_method::postback)
      wopts.max_deliveries_in_flight = http_threads;
    watchers.push_back(std::make_unique<mailbox::imap_watcher>(ex, mb, std::move(deliverer),
                                                               std::move(arbitrator), log, wopts));
  }

  observability::health_server health(ex);
  if (cfg.health.enabled) {
    if (auto ec = health.listen(cfg.health.address, cfg.health.port)) {
      report_fatal(fmt::format("health_check: cannot listen on {}:{}: {}", cfg.health.address,
                               cfg.health.port, ec.message()));
      return 1;
    }
    health.set_routes(make_health_routes(cfg, watchers, health));
    asio::co_spawn(ex, health.serve(), asio::detached);
  }

  heap_trimmer trimmer(ex);
  trimmer.start();

  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  asio::steady_timer grace(ioc);
  asio::steady_timer hard_stop(ioc);
  bool shutting_down = false;
  std::size_t running = 0;  // watchers whose run() has not returned
  // Cluster mode: the node starts and stops watchers as it takes and gives
  // up their leases; run() returns after it left the cluster.
  std::unique_ptr<cluster::node> node;
  bool node_running = false;

  auto finish = [&] {
    // Every watcher is done, so no delivery is in flight: what the HTTP pool
    // still runs (a token request nobody waits for) is abandoned.
    if (http) http->abort_all();
    if (graph_http) graph_http->abort_all();
    for (auto& [_, p] : pg_pools) p->abort_all();
    health.stop();
    trimmer.stop();
    signals.cancel();
    grace.cancel();
    hard_stop.cancel();
    asio::co_spawn(ex, redis.close_all(), asio::detached);
  };
  auto maybe_finish = [&] {
    if (shutting_down && running == 0 && !node_running) finish();
  };

  std::function<void()> shutdown = [&] {
    if (shutting_down) {
      for (auto& w : watchers) w->abort();  // second signal: stop waiting
      return;
    }
    shutting_down = true;
    health.set_running(false);
    if (node) {
      node->leave();  // stops the watchers it started, then releases their leases
    } else {
      for (auto& w : watchers) w->stop();
    }
    grace.expires_after(opts.shutdown_grace);
    grace.async_wait([&](error_code ec) {
      if (ec) return;
      for (auto& w : watchers) w->abort();
      hard_stop.expires_after(std::chrono::seconds(5));
      hard_stop.async_wait([&](error_code e) {
        if (!e) ioc.stop();
      });
    });
    maybe_finish();
  };

  std::function<void()> wait_signal = [&] {
    signals.async_wait([&](error_code ec, int) {
      if (ec) return;
      shutdown();
      wait_signal();
    });
  };
  wait_signal();

  // A coroutine of ours ended with an exception: report it, shut down.
  auto internal_error = [&](std::exception_ptr e, const char* what) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      report_fatal(fmt::format("{}: {}", what, x.what()));
    }
    shutdown();
  };

  auto start_watcher = [&](std::size_t i) {
    auto& w = watchers[i];
    auto on_fatal = [&, label = w->mailbox().label()](const mailbox::fatal_error& f) {
      report_fatal(fmt::format("mailbox {}: {}", label, f.message));
      shutdown();
    };
    ++running;
    asio::co_spawn(ex, w->run(on_fatal), [&, i](std::exception_ptr e) {
      if (e) internal_error(e, "internal error");
      --running;
      if (node) {
        watchers[i]->set_active(false);
        node->watcher_stopped(i);
      }
      maybe_finish();
    });
  };

  if (cfg.cluster.enabled) {
    std::vector<std::string> labels;
    for (auto& w : watchers) {
      labels.push_back(w->mailbox().label());
      w->set_active(false);
    }
    cluster::node_hooks hooks;
    hooks.start = [&](std::size_t i) {
      watchers[i]->restart();
      watchers[i]->set_active(true, node->ownership(i).since_unix_ms / 1000);
      start_watcher(i);
    };
    hooks.stop = [&](std::size_t i) { watchers[i]->stop(); };
    hooks.abort = [&](std::size_t i) { watchers[i]->abort(); };
    node = std::make_unique<cluster::node>(ex, cfg.cluster, std::move(labels), std::move(hooks),
                                           first_log ? first_log : log::logger::discard());
    node_running = true;
    asio::co_spawn(ex, node->run(), [&](std::exception_ptr e) {
      node_running = false;
      if (e) internal_error(e, "internal error in the cluster node");
      maybe_finish();
    });
  } else {
    for (std::size_t i = 0; i < watchers.size(); ++i) start_watcher(i);
  }
  if (watchers.empty()) shutdown();

  ioc.run();
  return exit_code;
}

}  // namespace mailroom::app
