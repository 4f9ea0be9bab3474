// The I/O-free part of the que delivery: which que_jobs layout a database
// has, the INSERT that fits it, the job's args JSON, and how PostgreSQL's
// errors map to delivery errors.
//
// mail_room (lib/mail_room/delivery/que.rb) always runs
//   INSERT INTO que_jobs (priority, job_class, queue, args) VALUES ($1, $2, $3, $4)
// with args = JSON.dump([message]), which fits Que 0.x only. The layouts, as
// Que's migrations (que-rb/que lib/que/migrations/<n>/up.sql) leave them:
//   Que 0.x (migrations 1-3)  args json, queue DEFAULT ''
//   Que 1.x (migration 4; 5 from Que 1.2 on)
//                             args jsonb, queue DEFAULT 'default'; migration 5
//                             adds job_schema_version DEFAULT 1 (a Que 1 job)
//   Que 2.x (migrations 6-8)  also kwargs jsonb NOT NULL DEFAULT '{}', and
//                             job_schema_version NOT NULL without a default:
//                             Que 2 writes Que.job_schema_version, 2
// mailroom reads the columns of que_jobs once per connection and writes the
// row each layout's own Que would write: for Que 2.x job_schema_version 2
// and kwargs {} as well, with the message as the one positional argument.
//
// The queue: mail_room writes its default queue '' explicitly. Que >= 1
// workers work the queue 'default' and never run jobs in ''. When no queue
// is configured, mailroom leaves the column out so that the table's default
// applies ('' on Que 0.x, 'default' on Que 1.x and 2.x). A configured queue
// is written as given.
#pragma once

#include "delivery/errc.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mailroom::delivery {

enum class que_layout {
  v0,  // Que 0.x
  v1,  // Que 1.x
  v2,  // Que 2.x
};
// "Que 0.x", "Que 1.x", "Que 2.x".
const char* que_layout_name(que_layout l);

// Que.job_schema_version of Que 2 (lib/que/version.rb), which its workers
// select on; Que 1.2+ tables default to 1 for Que 1 jobs.
inline constexpr int que2_job_schema_version = 2;

// One column of que_jobs, as que_columns_query lists it.
struct que_column {
  std::string name;
  bool not_null = false;
  bool has_default = false;
};

// The columns of the que_jobs that an unqualified INSERT INTO que_jobs would
// reach (resolved through search_path, like the INSERT): attname, attnotnull,
// atthasdef ("t"/"f"). No rows: no such table. Needs no privilege on the table.
extern const char* const que_columns_query;

// What mailroom needs to know of a que_jobs table.
struct que_table {
  que_layout layout = que_layout::v0;
  bool has_queue = true;  // false only before Que 0.6 (migration 3)
  bool has_kwargs = false;
  // Que 2.x: job_schema_version is written (2), whatever its default.
  bool writes_job_schema_version = false;
};

// The layout of que_jobs from its columns: Que 2.x when it has kwargs or a
// job_schema_version that is NOT NULL without a default, Que 0.x when it has
// job_id (Que 1 renamed it id), else Que 1.x. nullopt when mailroom cannot
// write to it, with the reason in `why` (naming the table): no such table (no
// columns), or no priority/job_class/args column (a Que 1.0 beta kept the
// arguments in `data`).
std::optional<que_table> detect_que_table(const std::vector<que_column>& columns, std::string& why);

// The parameters of the INSERT; make_que_insert() names their columns in this order.
enum class que_param { priority, job_class, queue, args, kwargs, job_schema_version };

struct que_statement {
  std::string sql;
  std::vector<que_param> params;
};

// The INSERT for `table`: mail_room's statement on Que 0.x and 1.x, the queue
// column left out when `with_queue` is false, kwargs and job_schema_version
// added on Que 2.x. Every value is a parameter. nullopt (with `why`) when a
// queue is configured but the table has no queue column.
std::optional<que_statement> make_que_insert(const que_table& table, bool with_queue,
                                             std::string& why);

// The args of the job, JSON.dump([message]) as mail_room writes it: the
// message (valid UTF-8: convert it with as_utf8() first) as the only element.
std::string que_args_json(std::string_view utf8_message);
// Its exact length, without building it.
std::size_t que_args_json_size(std::string_view utf8_message);

// The value kwargs gets on Que 2.x.
inline constexpr const char* que_kwargs_json = "{}";

// The delivery error for a statement that failed with SQLSTATE `sqlstate`
// (five characters; empty when libpq reported no SQLSTATE, e.g. a lost
// connection):
//   57014 (statement timeout)                          timed_out
//   class 08, 53, 57P0x, 40, 55P03, 58, XX, 25006, ""  target_unavailable
//   22P05, 22021, 22P02, 54xxx (the message's text cannot be stored, e.g. a
//     NUL character in a jsonb column)                 refused
//   class 42, 23, 28, 3D, 3F, 22 otherwise, P0001      misconfigured
//   anything else                                      target_unavailable
errc classify_sqlstate(std::string_view sqlstate);

// Whether a statement that failed with this SQLSTATE may have failed because
// the table changed since its layout was read (a Que migration while mailroom
// runs): undefined table or column, not-null violation. The statement did not
// run, so it can be retried once the layout is read again.
bool que_layout_may_be_stale(std::string_view sqlstate);

// The delivery error for a connection attempt that failed with libpq's
// message `message` (libpq gives no SQLSTATE there): bad password, no
// pg_hba.conf entry, unknown database or role, a password required but none
// configured, SSL required but not offered -> misconfigured; "timeout
// expired" -> timed_out; anything else (refused, unreachable, starting up,
// shutting down, too many clients) -> target_unavailable.
errc classify_connect_error(std::string_view message);

// libpq's multi-line messages on one line: runs of whitespace (newlines,
// tabs) become one space, trimmed.
std::string one_line(std::string_view message);

}  // namespace mailroom::delivery
