#include "delivery/que.hpp"

#include "delivery/job.hpp"

#include <fmt/format.h>
#include <libpq-fe.h>
#include <poll.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <string_view>
#include <utility>

namespace mailroom::delivery {

namespace asio = boost::asio;

struct pg_pool::connection {
  PGconn* conn = nullptr;
  std::shared_ptr<PGcancel> cancel;  // for abort_all(); may outlive the connection
  std::optional<que_table> table;    // the layout of que_jobs, once read
  connection() = default;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection() {
    if (conn != nullptr) PQfinish(conn);
  }
  bool ok() const {
    return PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) == PQTRANS_IDLE;
  }
};

namespace {

struct result_closer {
  void operator()(PGresult* r) const { PQclear(r); }
};
using pg_result_ptr = std::unique_ptr<PGresult, result_closer>;

// libpq prints server notices to stderr by default; nothing on que_jobs
// sends one worth reading.
void ignore_notice(void*, const char*) {}

// Whether an idle connection is still usable. One the server ended while it
// sat idle (a restart, idle_session_timeout, pg_terminate_backend) has the
// server's last message and the end of the stream waiting on its socket:
// read them without blocking (libpq's socket is non-blocking), so that a new
// connection is made instead of a delivery failing on this one.
bool idle_connection_alive(PGconn* conn) {
  for (int i = 0; i < 4 && PQstatus(conn) == CONNECTION_OK; ++i) {
    pollfd p{};
    p.fd = PQsocket(conn);
    p.events = POLLIN;
    const int n = ::poll(&p, 1, 0);
    if (n == 0) break;  // nothing waiting
    if (n < 0 || PQconsumeInput(conn) == 0) return false;
  }
  return PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) == PQTRANS_IDLE;
}

std::string sqlstate_of(const PGresult* r) {
  const char* s = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  return s != nullptr ? s : "";
}

std::string describe_target(const config::que_options& o) {
  std::string where = o.host.empty() ? std::string("localhost") : o.host;
  std::string out = o.username.empty() ? std::string() : o.username + "@";
  return out + fmt::format("{}:{}/{}", where, o.port, o.database);
}

// The args JSON of `m` into `out`, the message converted to UTF-8 as for
// Sidekiq; false (with the size) when it would be larger than `limit`
// (0: none), in which case nothing is built.
bool build_args(const mail_message& m, std::uint64_t limit, log::logger& logger, std::string& out,
                std::size_t& size) {
  utf8_result converted;
  const std::string_view body = job_text(m, "Que", logger, converted);
  size = que_args_json_size(body);
  if (limit != 0 && size > limit) return false;
  out = que_args_json(body);
  return true;
}

}  // namespace

pg_pool::pg_pool(const config::que_options& o)
    : host_(o.host),
      port_(std::to_string(o.port)),
      database_(o.database),
      user_(o.username),
      password_(o.password),
      // libpq waits forever for 0, and takes 1 as 2
      connect_timeout_(
          std::to_string(std::max<std::chrono::seconds::rep>(o.connect_timeout.count(), 1))),
      options_(fmt::format(
          "-c statement_timeout={}",
          std::chrono::duration_cast<std::chrono::milliseconds>(o.statement_timeout).count())),
      describe_(describe_target(o)),
      pool_(std::max<std::size_t>(o.pool_size, 1)) {}

pg_pool::~pg_pool() {
  abort_all();
  pool_.join();
  idle_.clear();
}

bool pg_pool::same_database(const config::que_options& a, const config::que_options& b) {
  return a.host == b.host && a.port == b.port && a.database == b.database &&
         a.username == b.username && a.password == b.password && a.pool_size == b.pool_size &&
         a.connect_timeout == b.connect_timeout && a.statement_timeout == b.statement_timeout;
}

void pg_pool::abort_all() {
  stopping_.store(true, std::memory_order_relaxed);
  std::vector<std::shared_ptr<PGcancel>> running;
  {
    std::lock_guard lock(mutex_);
    running = busy_;
  }
  // Outside the lock: PQcancel opens a connection of its own to the server.
  for (const auto& cancel : running) {
    char error[256];
    PQcancel(cancel.get(), error, sizeof error);
  }
}

void pg_pool::set_busy(const connection& c, bool busy) {
  if (!c.cancel) return;
  std::lock_guard lock(mutex_);
  if (busy) {
    busy_.push_back(c.cancel);
  } else {
    busy_.erase(std::remove(busy_.begin(), busy_.end(), c.cancel), busy_.end());
  }
}

asio::awaitable<pg_outcome> pg_pool::insert_job(que_job job) {
  // co_spawn keeps the caller's executor busy (work-tracked) while the INSERT
  // runs on the pool and resumes the caller through that executor.
  pg_outcome o = co_await asio::co_spawn(pool_, run_on_pool(std::move(job)), asio::use_awaitable);
  co_return o;
}

asio::awaitable<pg_outcome> pg_pool::run_on_pool(que_job job) {
  co_return run(job);
}

asio::awaitable<pg_outcome> pg_pool::probe() {
  pg_outcome o = co_await asio::co_spawn(pool_, probe_on_pool(), asio::use_awaitable);
  co_return o;
}

asio::awaitable<pg_outcome> pg_pool::probe_on_pool() {
  pg_outcome out;
  std::unique_ptr<connection> c = acquire(out);
  if (c == nullptr) co_return out;
  // Read afresh: the check is there to see the table as it is now.
  c->table.reset();
  if (!read_layout(*c, out)) c->table.reset();
  release(std::move(c));
  co_return out;
}

std::unique_ptr<pg_pool::connection> pg_pool::acquire(pg_outcome& out) {
  for (;;) {
    std::unique_ptr<connection> c;
    {
      std::lock_guard lock(mutex_);
      if (idle_.empty()) break;
      c = std::move(idle_.back());
      idle_.pop_back();
    }
    if (idle_connection_alive(c->conn)) return c;
    // else closed here: the server ended it while it sat idle
  }
  return connect(out);
}

std::unique_ptr<pg_pool::connection> pg_pool::connect(pg_outcome& out) {
  std::vector<const char*> keys;
  std::vector<const char*> values;
  const auto add = [&](const char* key, const char* value) {
    if (value[0] == '\0') return;  // libpq's default (or its PG* variable) applies
    keys.push_back(key);
    values.push_back(value);
  };
  add("host", host_.c_str());
  add("port", port_.c_str());
  add("dbname", database_.c_str());
  add("user", user_.c_str());
  add("password", password_.reveal().c_str());
  add("connect_timeout", connect_timeout_.c_str());
  add("application_name", "mailroom");
  add("client_encoding", "UTF8");
  add("options", options_.c_str());
  // A server that vanished without closing the connection (a host down, a
  // network cut) is noticed after about 25 s of silence.
  add("keepalives", "1");
  add("keepalives_idle", "10");
  add("keepalives_interval", "5");
  add("keepalives_count", "3");
  keys.push_back(nullptr);
  values.push_back(nullptr);

  auto c = std::make_unique<connection>();
  // expand_dbname 0: the database name is a name, never a connection string.
  c->conn = PQconnectdbParams(keys.data(), values.data(), 0);
  if (c->conn == nullptr) {
    out.ec = errc::target_unavailable;
    out.detail = fmt::format("connecting to PostgreSQL at {}: out of memory", describe_);
    return nullptr;
  }
  if (PQstatus(c->conn) != CONNECTION_OK) {
    std::string message = one_line(PQerrorMessage(c->conn));
    errc e = classify_connect_error(message);
    if (PQconnectionNeedsPassword(c->conn) && password_.empty()) {
      e = errc::misconfigured;
      message += " (no password is configured)";
    }
    out.ec = e;
    out.detail = fmt::format("connecting to PostgreSQL at {}: {}", describe_, message);
    return nullptr;
  }
  PQsetNoticeProcessor(c->conn, &ignore_notice, nullptr);
  c->cancel = std::shared_ptr<PGcancel>(PQgetCancel(c->conn), [](PGcancel* p) {
    if (p != nullptr) PQfreeCancel(p);
  });
  return c;
}

void pg_pool::fail(const connection& c, const PGresult* r, const char* what,
                   pg_outcome& out) const {
  const std::string sqlstate = sqlstate_of(r);
  const char* primary = r != nullptr ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  // Only the primary message: the DETAIL of a constraint violation lists the
  // failing row, i.e. the whole message.
  std::string text = primary != nullptr ? one_line(primary) : one_line(PQerrorMessage(c.conn));
  if (text.empty() && r != nullptr) text = PQresStatus(PQresultStatus(r));
  errc e = classify_sqlstate(sqlstate);
  if (PQstatus(c.conn) != CONNECTION_OK) e = errc::target_unavailable;
  if (stopping_.load(std::memory_order_relaxed) && sqlstate == "57014") {
    e = errc::target_unavailable;
    text = "cancelled: mailroom is shutting down";
  }
  out.ec = e;
  out.detail = sqlstate.empty()
                   ? fmt::format("{} on {}: {}", what, describe_, text)
                   : fmt::format("{} on {}: {} (SQLSTATE {})", what, describe_, text, sqlstate);
}

bool pg_pool::read_layout(connection& c, pg_outcome& out) {
  set_busy(c, true);
  pg_result_ptr r(PQexec(c.conn, que_columns_query));
  set_busy(c, false);
  if (r == nullptr || PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
    fail(c, r.get(), "reading the columns of que_jobs", out);
    return false;
  }
  std::vector<que_column> columns;
  const int rows = PQntuples(r.get());
  columns.reserve(static_cast<std::size_t>(rows));
  for (int i = 0; i < rows; ++i) {
    que_column col;
    col.name = PQgetvalue(r.get(), i, 0);
    col.not_null = PQgetvalue(r.get(), i, 1)[0] == 't';
    col.has_default = PQgetvalue(r.get(), i, 2)[0] == 't';
    columns.push_back(std::move(col));
  }
  std::string why;
  const std::optional<que_table> table = detect_que_table(columns, why);
  if (!table) {
    out.ec = errc::misconfigured;
    out.detail = fmt::format("{} (database {})", why, describe_);
    return false;
  }
  c.table = table;
  out.layout_read = que_layout_name(table->layout);
  return true;
}

void pg_pool::release(std::unique_ptr<connection> c) {
  // A broken connection, or one left inside a transaction, is closed here.
  if (c == nullptr || stopping_.load(std::memory_order_relaxed) || !c->ok()) return;
  std::lock_guard lock(mutex_);
  idle_.push_back(std::move(c));
}

pg_outcome pg_pool::run(const que_job& job) {
  pg_outcome out;
  if (stopping_.load(std::memory_order_relaxed)) {
    out.ec = errc::target_unavailable;
    out.detail =
        fmt::format("PostgreSQL connections to {} closing: mailroom is shutting down", describe_);
    return out;
  }
  std::unique_ptr<connection> c = acquire(out);
  if (c == nullptr) return out;

  const std::string priority = std::to_string(job.priority);
  const std::string job_schema_version = std::to_string(que2_job_schema_version);
  for (int attempt = 0;; ++attempt) {
    const bool layout_known = c->table.has_value();
    if (!layout_known && !read_layout(*c, out)) {
      c->table.reset();
      release(std::move(c));
      return out;
    }
    std::string why;
    const std::optional<que_statement> st = make_que_insert(*c->table, job.queue.has_value(), why);
    if (!st) {
      out.ec = errc::misconfigured;
      out.detail = fmt::format("{} (database {})", why, describe_);
      c->table.reset();
      release(std::move(c));
      return out;
    }
    std::vector<const char*> values;
    values.reserve(st->params.size());
    for (const que_param p : st->params) {
      switch (p) {
        case que_param::priority:
          values.push_back(priority.c_str());
          break;
        case que_param::job_class:
          values.push_back(job.job_class.c_str());
          break;
        case que_param::queue:
          values.push_back(job.queue->c_str());
          break;
        case que_param::args:
          values.push_back(job.args.c_str());
          break;
        case que_param::kwargs:
          values.push_back(que_kwargs_json);
          break;
        case que_param::job_schema_version:
          values.push_back(job_schema_version.c_str());
          break;
      }
    }

    // One statement outside a transaction block: PostgreSQL commits it before
    // it answers, so PGRES_COMMAND_OK means the row is committed.
    set_busy(*c, true);
    pg_result_ptr r(PQexecParams(c->conn, st->sql.c_str(), static_cast<int>(values.size()), nullptr,
                                 values.data(), nullptr, nullptr, 0));
    set_busy(*c, false);
    if (r != nullptr && PQresultStatus(r.get()) == PGRES_COMMAND_OK) {
      if (PQtransactionStatus(c->conn) != PQTRANS_IDLE) {
        // Never expected: no statement here opens a transaction. Closing
        // the connection rolls the INSERT back; the message stays.
        out.ec = errc::target_unavailable;
        out.detail = fmt::format("INSERT INTO que_jobs on {}: not committed (inside a transaction)",
                                 describe_);
        return out;
      }
      const std::string_view rows = PQcmdTuples(r.get());
      if (rows != "1") {
        out.ec = errc::misconfigured;
        out.detail = fmt::format(
            "INSERT INTO que_jobs on {}: {} rows stored (a trigger or rule on que_jobs drops "
            "them?)",
            describe_, rows.empty() ? "no" : std::string(rows));
        release(std::move(c));
        return out;
      }
      release(std::move(c));
      return out;
    }

    const std::string sqlstate = sqlstate_of(r.get());
    if (attempt == 0 && layout_known && que_layout_may_be_stale(sqlstate) &&
        PQstatus(c->conn) == CONNECTION_OK) {
      // The table changed since its layout was read (a Que migration while
      // mailroom runs): the statement did not run; read it again and retry.
      c->table.reset();
      continue;
    }
    fail(*c, r.get(), "INSERT INTO que_jobs", out);
    c->table.reset();  // read again next time: cheap, and the table may have changed
    // A standby (read-only) or a server shutting down: connect anew next time.
    if (sqlstate == "25006" || sqlstate.rfind("57P", 0) == 0) return out;
    release(std::move(c));
    return out;
  }
}

que_deliverer::que_deliverer(const config::que_options& opts, std::shared_ptr<pg_pool> pool,
                             std::shared_ptr<log::logger> logger, std::uint64_t max_job_size)
    : priority_(opts.priority),
      job_class_(opts.job_class),
      queue_(opts.queue),
      max_job_size_(max_job_size),
      pool_(std::move(pool)),
      logger_(std::move(logger)) {}

asio::awaitable<result> que_deliverer::deliver(const mail_message& m) {
  que_job job;
  job.priority = priority_;
  job.job_class = job_class_;
  // An empty queue is left to the table's default: '' on Que 0.x (what
  // mail_room writes), 'default' on Que 1.x and 2.x, the queue their workers
  // work (mail_room's '' is never worked there).
  if (!queue_.empty()) job.queue = queue_;
  std::size_t args_size = 0;
  if (!build_args(m, max_job_size_, *logger_, job.args, args_size)) {
    co_return result{errc::refused,
                     fmt::format("the job's args are {} bytes, above max_job_size ({} bytes)",
                                 args_size, max_job_size_)};
  }
  pg_outcome o = co_await pool_->insert_job(std::move(job));
  // Once, and again when it changes (a Que migration), not per connection.
  if (!o.layout_read.empty() && o.layout_read != layout_logged_) {
    layout_logged_ = o.layout_read;
    log::fields f;
    f["delivery_method"] = "Que";
    f["action"] = "que_jobs layout read";
    f["database"] = pool_->describe();
    f["layout"] = o.layout_read;
    logger_->info(f);
  }
  if (o.ec) co_return result{o.ec, std::move(o.detail)};
  log_job_pushed(*logger_, "Que");  // lib/mail_room/delivery/que.rb
  co_return result{};
}

}  // namespace mailroom::delivery
