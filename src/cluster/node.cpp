#include "cluster/node.hpp"

#include "cluster/assignment.hpp"
#include "cluster/protocol.hpp"
#include "redis/client.hpp"

#include <fmt/format.h>
#include <unistd.h>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <random>

#ifndef MAILROOM_VERSION
#define MAILROOM_VERSION "0.1.0"
#endif

namespace mailroom::cluster {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

// Leases per EVAL: a script blocks Redis while it runs (~1 µs per key).
constexpr std::size_t max_batch = 500;

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string make_instance_id() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  std::random_device rd;
  return fmt::format("{}:{}:{:08x}", host, ::getpid(), rd());
}

std::chrono::milliseconds ms(clock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d);
}

}  // namespace

node::node(asio::any_io_executor ex, const config::cluster_options& opts,
           std::vector<std::string> mailbox_labels, node_hooks hooks,
           std::shared_ptr<log::logger> log)
    : executor_(ex),
      opts_(opts),
      timing_(lease_timing::from_ttl(opts.lease_ttl)),
      labels_(std::move(mailbox_labels)),
      hooks_(std::move(hooks)),
      log_(std::move(log)),
      id_(make_instance_id()),
      started_unix_ms_(unix_ms()),
      leases_(labels_.size(), lease(timing_)),
      values_(labels_.size()),
      taken_unix_ms_(labels_.size(), 0),
      wake_timer_(ex, clock::time_point::max()) {
  redis::client_options ro;
  // A request that takes longer than a renewal period is no use: the lease
  // would be decided by its expiry anyway.
  ro.connect_timeout = std::min<net::duration>(ro.connect_timeout, timing_.renew_every);
  ro.command_timeout = std::min<net::duration>(ro.command_timeout, timing_.renew_every);
  redis_ = std::make_shared<redis::client>(ex, opts_.redis, ro);
}

node::~node() = default;

mailbox_ownership node::ownership(std::size_t i) const {
  mailbox_ownership o;
  o.state = leases_[i].state();
  o.ours = o.state == lease_state::held || o.state == lease_state::stopping;
  if (o.ours) o.since_unix_ms = taken_unix_ms_[i];
  return o;
}

void node::leave() {
  leaving_ = true;
  for (auto& l : leases_) l.want(false);
  wake();
}

void node::watcher_stopped(std::size_t i) {
  leases_[i].on_watcher_stopped();
  wake();
}

void node::wake() {
  woken_ = true;
  wake_timer_.cancel();
}

std::string node::instance_json() const {
  log::fields f;
  f["id"] = id_;
  f["version"] = MAILROOM_VERSION;
  f["started_at_ms"] = started_unix_ms_;
  std::size_t held = 0;
  for (const auto& l : leases_) held += l.state() == lease_state::held ? 1 : 0;
  f["mailboxes"] = held;
  return f.dump();
}

asio::awaitable<void> node::heartbeat() {
  const keys k{opts_.redis.key("cluster:")};
  auto r = co_await redis_->command(heartbeat_command(k, id_, ms(timing_.ttl), instance_json()));
  std::optional<std::vector<std::string>> live;
  if (r && !r->is_error()) live = parse_members(*r);
  if (!live) {
    if (heartbeat_ok_) {
      log::fields f;
      f["action"] = "cluster heartbeat failed";
      f["redis"] = redis_->describe();
      f["error"] = r ? redis::to_string(*r) : redis_->last_error();
      log_->warn(f);
    }
    heartbeat_ok_ = false;
    co_return;
  }
  heartbeat_ok_ = true;
  // Redis lists them by membership expiry, which every heartbeat changes.
  std::sort(live->begin(), live->end());
  if (*live != members_) {
    members_ = std::move(*live);
    log::fields f;
    f["action"] = "cluster members";
    f["instance"] = id_;
    f["members"] = members_;
    log_->info(f);
  }
  if (leaving_) co_return;
  const auto owner = assign(labels_, members_);
  for (std::size_t i = 0; i < leases_.size(); ++i) {
    leases_[i].want(owner[i] != no_instance && members_[owner[i]] == id_);
  }
}

asio::awaitable<void> node::round() {
  const keys k{opts_.redis.key("cluster:")};
  for (;;) {
    const auto now = clock::now();
    std::vector<std::size_t> takes, renews, releases;
    for (std::size_t i = 0; i < leases_.size(); ++i) {
      for (;;) {
        const lease_action a = leases_[i].next(now);
        if (a == lease_action::none) break;
        log::fields f;
        f["mailbox"] = labels_[i];
        switch (a) {
          case lease_action::take:
            values_[i] = lease_value(id_, unix_ms());
            takes.push_back(i);
            break;
          case lease_action::renew:
            renews.push_back(i);
            break;
          case lease_action::release:
            releases.push_back(i);
            break;
          case lease_action::start_watcher:
            f["action"] = "mailbox lease taken";
            log_->info(f);
            hooks_.start(i);
            break;
          case lease_action::stop_watcher:
            f["action"] = "handing the mailbox over";
            log_->info(f);
            hooks_.stop(i);
            break;
          case lease_action::abort_watcher:
            f["action"] = "mailbox lease lost: closing the mailbox now";
            log_->warn(f);
            hooks_.abort(i);
            break;
          case lease_action::none:
            break;
        }
      }
    }
    if (takes.empty() && renews.empty() && releases.empty()) co_return;

    // One round trip: the takes, renewals and releases, in batches.
    std::vector<std::vector<std::string>> cmds;
    struct batch {
      lease_action what;
      std::vector<std::size_t> items;
    };
    std::vector<batch> batches;
    auto add = [&](lease_action what, const std::vector<std::size_t>& items) {
      for (std::size_t from = 0; from < items.size(); from += max_batch) {
        batch b{what, {}};
        std::vector<lease_ref> refs;
        for (std::size_t j = from; j < std::min(items.size(), from + max_batch); ++j) {
          b.items.push_back(items[j]);
          refs.push_back({k.lease(labels_[items[j]]), values_[items[j]]});
        }
        if (what == lease_action::take) cmds.push_back(take_command(refs, ms(timing_.ttl)));
        if (what == lease_action::renew) cmds.push_back(renew_command(refs, ms(timing_.ttl)));
        if (what == lease_action::release) cmds.push_back(release_command(refs));
        batches.push_back(std::move(b));
      }
    };
    add(lease_action::take, takes);
    add(lease_action::renew, renews);
    add(lease_action::release, releases);
    const auto sent = clock::now();
    const std::int64_t sent_unix_ms = unix_ms();
    auto replies = co_await redis_->pipeline(std::move(cmds));
    for (std::size_t b = 0; b < batches.size(); ++b) {
      const auto& items = batches[b].items;
      std::vector<lease_reply> rs(items.size(), lease_reply::unavailable);
      if (replies && b < replies->size()) rs = parse_lease_replies((*replies)[b], items.size());
      for (std::size_t j = 0; j < items.size(); ++j) {
        lease& l = leases_[items[j]];
        switch (batches[b].what) {
          case lease_action::take:
            l.on_take(rs[j], sent);
            if (rs[j] == lease_reply::done) taken_unix_ms_[items[j]] = sent_unix_ms;
            break;
          case lease_action::renew:
            l.on_renew(rs[j], sent);
            break;
          default:
            l.on_release(rs[j]);
            break;
        }
      }
    }
  }
}

asio::awaitable<void> node::run() {
  {
    log::fields f;
    f["action"] = "joining the cluster";
    f["instance"] = id_;
    f["redis"] = redis_->describe();
    f["lease_ttl"] = opts_.lease_ttl.count();
    log_->info(f);
  }
  for (;;) {
    woken_ = false;
    if (!leaving_ && clock::now() >= next_heartbeat_) {
      co_await heartbeat();
      next_heartbeat_ = clock::now() + timing_.heartbeat_every;
    }
    co_await round();
    if (leaving_ && std::all_of(leases_.begin(), leases_.end(),
                                [](const lease& l) { return l.state() == lease_state::idle; }))
      break;
    if (woken_) continue;
    auto until = leaving_ ? clock::time_point::max() : next_heartbeat_;
    for (const auto& l : leases_) until = std::min(until, l.next_deadline());
    wake_timer_.expires_at(until);
    error_code ec;
    co_await wake_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  // Leave at once rather than after lease_ttl: the others rebalance now.
  const keys k{opts_.redis.key("cluster:")};
  std::vector<std::vector<std::string>> goodbye;
  goodbye.push_back({"ZREM", k.members(), id_});
  goodbye.push_back({"DEL", k.instance(id_)});
  co_await redis_->pipeline(std::move(goodbye));
  co_await redis_->close();
  log::fields f;
  f["action"] = "left the cluster";
  f["instance"] = id_;
  log_->info(f);
}

}  // namespace mailroom::cluster
