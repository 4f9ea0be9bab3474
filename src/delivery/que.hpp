// mail_room's que delivery (lib/mail_room/delivery/que.rb,
// mail_room-behaviour §3.3): one row in PostgreSQL's que_jobs per message,
// for Que 0.x, 1.x and 2.x (delivery/que_sql.hpp has the layouts, the INSERT
// and where mailroom differs from mail_room on the queue).
//
// mail_room opens a new connection per message and never closes it. Here the
// mailboxes that use the same database share a pg_pool: at most pool_size
// libpq connections, kept open and reused. libpq blocks, and the service runs
// one event loop that must never block, so every call runs on a thread pool
// owned by the pg_pool (pool_size threads) and the delivery resumes on the
// awaiting coroutine's executor.
#pragma once

#include "common/logger.hpp"
#include "common/secret.hpp"
#include "config/model.hpp"
#include "delivery/deliverer.hpp"
#include "delivery/que_sql.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

// libpq's handles (libpq-fe.h), kept out of this header.
struct pg_result;
struct pg_cancel;

namespace mailroom::delivery {

// One que_jobs row to insert; every value is sent as a text parameter.
struct que_job {
  std::int32_t priority = 100;
  std::string job_class;
  std::optional<std::string> queue;  // nullopt: the column is left to its default
  std::string args;                  // JSON: que_args_json()
};

// What a pg_pool call did.
struct pg_outcome {
  boost::system::error_code ec;  // empty: the INSERT was committed
  std::string detail;            // for the log; never contains the password or the message
  // Set when this call read the layout of que_jobs (a new connection, or the
  // table changed): e.g. "Que 2.x", for a log line.
  std::string layout_read;
};

// A pool of libpq connections for one database, shared by the mailboxes that
// use it. Connections are made on first use and kept open. One found broken
// (the server restarted or closed it, a statement failed with the connection
// lost) is dropped and a new one made on the next use, so deliveries resume
// after a PostgreSQL restart without restarting mailroom. The layout of
// que_jobs is read once per connection, and again after a failed statement;
// an INSERT that failed because the table changed under it (a Que migration
// while mailroom runs: an undefined column, a NOT NULL violation) did not
// run, and is retried once with the layout read again.
//
// Connection parameters: host (a name, an address, or a socket directory
// starting with /), port, dbname, user, password (only if configured; else
// libpq's PGPASSWORD/.pgpass apply, as they do for mail_room's pg gem),
// connect_timeout, application_name=mailroom, client_encoding=UTF8,
// options='-c statement_timeout=<ms>', TCP keepalives (a server that vanished
// is noticed within about 25 s). Other settings (sslmode and the like) come
// from libpq's PG* environment variables.
class pg_pool {
 public:
  explicit pg_pool(const config::que_options& opts);
  // Cancels the statements in flight, joins the threads, closes the
  // connections. Destroy the pool before the io_context of the coroutines that
  // await it.
  ~pg_pool();
  pg_pool(const pg_pool&) = delete;
  pg_pool& operator=(const pg_pool&) = delete;

  // Whether two mailboxes' options name the same database with the same
  // credentials and settings, i.e. may share one pool.
  static bool same_database(const config::que_options& a, const config::que_options& b);

  // "user@host:port/database", for logs.
  const std::string& describe() const { return describe_; }

  // Inserts `job` into que_jobs in its own (autocommit) transaction, on the
  // pool; resumes the caller on its own executor. Success means PostgreSQL
  // committed the row. A connection lost while the INSERT was in flight is
  // reported as a failure although PostgreSQL may have committed it just
  // before: the message is then delivered again (a duplicate, never a loss).
  boost::asio::awaitable<pg_outcome> insert_job(que_job job);

  // Connects (or takes an open connection) and reads the layout of
  // que_jobs: `layout_read` names it ("Que 2.x"), or `ec` says why not. For
  // `mailroom check`.
  boost::asio::awaitable<pg_outcome> probe();

  // Cancels the statements in flight and refuses new calls: for a shutdown
  // that has nothing left to deliver.
  void abort_all();

 private:
  struct connection;  // a PGconn and what is known of it; defined in que.cpp
  // The coroutine that co_spawn runs on the pool. A named member rather than a
  // lambda with captures: g++ 12 mis-destroys the captures of a lambda
  // coroutine passed to co_spawn.
  boost::asio::awaitable<pg_outcome> run_on_pool(que_job job);
  boost::asio::awaitable<pg_outcome> probe_on_pool();
  pg_outcome run(const que_job& job);
  std::unique_ptr<connection> acquire(pg_outcome& out);
  std::unique_ptr<connection> connect(pg_outcome& out);
  bool read_layout(connection& c, pg_outcome& out);
  void fail(const connection& c, const ::pg_result* r, const char* what, pg_outcome& out) const;
  void release(std::unique_ptr<connection> c);
  void set_busy(const connection& c, bool busy);

  const std::string host_;
  const std::string port_;
  const std::string database_;
  const std::string user_;
  const secret password_;
  const std::string connect_timeout_;
  const std::string options_;
  const std::string describe_;

  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::vector<std::unique_ptr<connection>> idle_;  // guarded by mutex_
  // The cancel handles of the connections running a statement, for
  // abort_all(); guarded by mutex_. Shared so that a cancel can be sent
  // outside the lock while its connection finishes and goes away.
  std::vector<std::shared_ptr<::pg_cancel>> busy_;
  boost::asio::thread_pool pool_;
};

class que_deliverer : public deliverer {
 public:
  // `pool` may be shared with other mailboxes that use the same database
  // (pg_pool::same_database). `max_job_size`: a message whose args JSON is
  // larger is refused (errc::refused) without being sent; 0: no limit.
  que_deliverer(const config::que_options& opts, std::shared_ptr<pg_pool> pool,
                std::shared_ptr<log::logger> logger, std::uint64_t max_job_size);

  const char* class_name() const override { return "MailRoom::Delivery::Que"; }

  // Acknowledged when the INSERT is committed. Errors: target_unavailable
  // (refused, lost connection, server starting up or shutting down),
  // timed_out (statement_timeout, connect_timeout), misconfigured (no
  // que_jobs, missing column or privilege, a constraint the configured
  // values violate, bad credentials), refused (above max_job_size, or text
  // PostgreSQL cannot store, such as a NUL character in a jsonb column).
  boost::asio::awaitable<result> deliver(const mail_message& m) override;

 private:
  std::int32_t priority_;
  std::string job_class_;
  std::string queue_;
  std::uint64_t max_job_size_;
  std::shared_ptr<pg_pool> pool_;
  std::shared_ptr<log::logger> logger_;
  std::string layout_logged_;  // the que_jobs layout last logged
};

}  // namespace mailroom::delivery
