#include "delivery/que_sql.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <sstream>
#include <string>
#include <vector>

namespace mailroom::delivery {
namespace {

// "name|t|t name|t|f ...": que_columns_query's rows as psql -At prints them,
// taken from databases built with tests/integration/fixtures/que/*.sql.
std::vector<que_column> columns(const std::string& psql_rows) {
  std::vector<que_column> out;
  std::istringstream in(psql_rows);
  std::string row;
  while (in >> row) {
    const auto a = row.find('|');
    const auto b = row.find('|', a + 1);
    out.push_back({row.substr(0, a), row[a + 1] == 't', row[b + 1] == 't'});
  }
  return out;
}

const std::string que0_columns =
    "priority|t|t run_at|t|t job_id|t|t job_class|t|f args|t|t error_count|t|t last_error|f|f "
    "queue|t|t";
const std::string que1_columns =
    "priority|t|t run_at|t|t id|t|t job_class|t|f error_count|t|t last_error_message|f|f "
    "queue|t|t last_error_backtrace|f|f finished_at|f|f expired_at|f|f args|t|t data|t|t";
// Que 1.2+ (migration 5): job_schema_version with DEFAULT 1, still Que 1 jobs.
const std::string que1_m5_columns = que1_columns + " job_schema_version|f|t";
const std::string que2_columns = que1_columns + " job_schema_version|t|f kwargs|t|t";

que_table detect(const std::string& rows) {
  std::string why;
  const auto t = detect_que_table(columns(rows), why);
  EXPECT_TRUE(t.has_value()) << why;
  return t.value_or(que_table{});
}

std::string insert_sql(const std::string& rows, bool with_queue) {
  std::string why;
  const auto st = make_que_insert(detect(rows), with_queue, why);
  EXPECT_TRUE(st.has_value()) << why;
  return st ? st->sql : "";
}

TEST(QueLayout, DetectsEachQueVersion) {
  EXPECT_EQ(detect(que0_columns).layout, que_layout::v0);
  EXPECT_EQ(detect(que1_columns).layout, que_layout::v1);
  EXPECT_EQ(detect(que1_m5_columns).layout, que_layout::v1);
  EXPECT_EQ(detect(que2_columns).layout, que_layout::v2);
  EXPECT_STREQ(que_layout_name(que_layout::v0), "Que 0.x");
  EXPECT_STREQ(que_layout_name(que_layout::v1), "Que 1.x");
  EXPECT_STREQ(que_layout_name(que_layout::v2), "Que 2.x");
}

TEST(QueLayout, MissingTableIsNamed) {
  std::string why;
  EXPECT_FALSE(detect_que_table({}, why).has_value());
  EXPECT_NE(why.find("que_jobs"), std::string::npos) << why;
  EXPECT_NE(why.find("does not exist"), std::string::npos) << why;
}

TEST(QueLayout, TableWithoutArgsIsRefused) {
  // A Que 1.0 beta kept the arguments in data.
  std::string why;
  EXPECT_FALSE(detect_que_table(
                   columns("priority|t|t run_at|t|t id|t|t job_class|t|f queue|t|t data|t|t"), why)
                   .has_value());
  EXPECT_NE(why.find("no column args"), std::string::npos) << why;
}

TEST(QueInsert, Que0WithQueueIsMailRoomsStatement) {
  EXPECT_EQ(insert_sql(que0_columns, true),
            "INSERT INTO que_jobs (priority, job_class, queue, args) VALUES ($1, $2, $3, $4)");
  EXPECT_EQ(insert_sql(que1_columns, true),
            "INSERT INTO que_jobs (priority, job_class, queue, args) VALUES ($1, $2, $3, $4)");
  EXPECT_EQ(insert_sql(que1_m5_columns, true),
            "INSERT INTO que_jobs (priority, job_class, queue, args) VALUES ($1, $2, $3, $4)");
}

TEST(QueInsert, UnsetQueueIsLeftToTheTablesDefault) {
  EXPECT_EQ(insert_sql(que0_columns, false),
            "INSERT INTO que_jobs (priority, job_class, args) VALUES ($1, $2, $3)");
  EXPECT_EQ(insert_sql(que1_columns, false),
            "INSERT INTO que_jobs (priority, job_class, args) VALUES ($1, $2, $3)");
}

TEST(QueInsert, Que2AddsKwargsAndJobSchemaVersion) {
  std::string why;
  const auto st = make_que_insert(detect(que2_columns), true, why);
  ASSERT_TRUE(st.has_value()) << why;
  EXPECT_EQ(st->sql,
            "INSERT INTO que_jobs (priority, job_class, queue, args, kwargs, job_schema_version) "
            "VALUES ($1, $2, $3, $4, $5, $6)");
  EXPECT_EQ(st->params, (std::vector<que_param>{que_param::priority, que_param::job_class,
                                                que_param::queue, que_param::args,
                                                que_param::kwargs, que_param::job_schema_version}));
  EXPECT_EQ(insert_sql(que2_columns, false),
            "INSERT INTO que_jobs (priority, job_class, args, kwargs, job_schema_version) "
            "VALUES ($1, $2, $3, $4, $5)");
  EXPECT_EQ(que2_job_schema_version, 2);
  EXPECT_STREQ(que_kwargs_json, "{}");
}

TEST(QueInsert, RequiredJobSchemaVersionWithoutKwargsIsStillWritten) {
  const auto t = detect(que1_columns + " job_schema_version|t|f");
  EXPECT_EQ(t.layout, que_layout::v2);
  EXPECT_TRUE(t.writes_job_schema_version);
  EXPECT_FALSE(t.has_kwargs);
  EXPECT_EQ(insert_sql(que1_columns + " job_schema_version|t|f", false),
            "INSERT INTO que_jobs (priority, job_class, args, job_schema_version) "
            "VALUES ($1, $2, $3, $4)");
}

TEST(QueInsert, QueueConfiguredButNoQueueColumn) {
  // Que before 0.6 (migrations 1 and 2 only).
  const std::string rows =
      "priority|t|t run_at|t|t job_id|t|t job_class|t|f args|t|t error_count|t|t last_error|f|f";
  const auto t = detect(rows);
  EXPECT_FALSE(t.has_queue);
  std::string why;
  EXPECT_FALSE(make_que_insert(t, true, why).has_value());
  EXPECT_NE(why.find("queue"), std::string::npos);
  EXPECT_EQ(insert_sql(rows, false),
            "INSERT INTO que_jobs (priority, job_class, args) VALUES ($1, $2, $3)");
}

TEST(QueArgs, IsJsonDumpOfAOneElementArray) {
  // JSON.dump(["..."]) as Ruby writes it: CR LF and quotes escaped, "/" and
  // non-ASCII as they are, other control characters as \u00XX.
  const std::string message = "Subject: caf\xC3\xA9 a/b\r\n\r\n\"q\" \\ \x01\t\n";
  const std::string expected =
      "[\"Subject: caf\xC3\xA9 a/b\\r\\n\\r\\n\\\"q\\\" \\\\ \\u0001\\t\\n\"]";
  EXPECT_EQ(que_args_json(message), expected);
  EXPECT_EQ(que_args_json_size(message), expected.size());
  const auto parsed = nlohmann::json::parse(que_args_json(message));
  ASSERT_TRUE(parsed.is_array());
  ASSERT_EQ(parsed.size(), 1u);
  EXPECT_EQ(parsed[0].get<std::string>(), message);
  EXPECT_EQ(que_args_json(""), "[\"\"]");
  EXPECT_EQ(que_args_json_size(""), 4u);
}

TEST(QueErrors, SqlStates) {
  EXPECT_EQ(classify_sqlstate("57014"), errc::timed_out);
  for (const char* s : {"", "08006", "08001", "57P01", "57P02", "57P03", "53300", "53100", "40001",
                        "40P01", "55P03", "58030", "XX000", "25006"}) {
    EXPECT_EQ(classify_sqlstate(s), errc::target_unavailable) << s;
  }
  for (const char* s : {"42P01", "42703", "42501", "23502", "23514", "23505", "28P01", "3D000",
                        "3F000", "22003", "22001", "P0001"}) {
    EXPECT_EQ(classify_sqlstate(s), errc::misconfigured) << s;
  }
  for (const char* s : {"22P05", "22021", "22P02", "54000", "54001"}) {
    EXPECT_EQ(classify_sqlstate(s), errc::refused) << s;
  }
  EXPECT_TRUE(que_layout_may_be_stale("42P01"));
  EXPECT_TRUE(que_layout_may_be_stale("42703"));
  EXPECT_TRUE(que_layout_may_be_stale("23502"));
  EXPECT_FALSE(que_layout_may_be_stale("23514"));
  EXPECT_FALSE(que_layout_may_be_stale("57014"));
  EXPECT_FALSE(que_layout_may_be_stale(""));
}

TEST(QueErrors, ConnectMessages) {
  // libpq 15's messages.
  const char* misconfigured[] = {
      "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password authentication "
      "failed for user \"mailroom\"",
      "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  database \"nosuchdb\" "
      "does not exist",
      "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  role \"nosuchrole\" does "
      "not exist",
      "connection to server at \"127.0.0.1\", port 5432 failed: fe_sendauth: no password supplied",
      "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  no pg_hba.conf entry for "
      "host \"127.0.0.1\", user \"x\", database \"y\", no encryption",
      "connection to server at \"127.0.0.1\", port 5432 failed: server does not support SSL, but "
      "SSL was required",
  };
  for (const char* m : misconfigured)
    EXPECT_EQ(classify_connect_error(m), errc::misconfigured) << m;
  const char* unavailable[] = {
      "connection to server at \"127.0.0.1\", port 1 failed: Connection refused Is the server "
      "running on that host and accepting TCP/IP connections?",
      "connection to server on socket \"/nonexistent/.s.PGSQL.5432\" failed: No such file or "
      "directory Is the server running locally and accepting connections on that socket?",
      "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  the database system is "
      "starting up",
      "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  the database system is "
      "shutting down",
      "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  sorry, too many clients "
      "already",
      "could not translate host name \"db.invalid\" to address: Name or service not known",
      "connection to server at \"127.0.0.1\", port 5432 failed: server closed the connection "
      "unexpectedly This probably means the server terminated abnormally before or while "
      "processing the request.",
  };
  for (const char* m : unavailable) {
    EXPECT_EQ(classify_connect_error(m), errc::target_unavailable) << m;
  }
  EXPECT_EQ(classify_connect_error(
                "connection to server at \"10.0.0.1\", port 5432 failed: timeout expired"),
            errc::timed_out);
}

TEST(QueErrors, OneLine) {
  EXPECT_EQ(one_line("connection to server at \"h\", port 1 failed: Connection refused\n\tIs the "
                     "server running?\n"),
            "connection to server at \"h\", port 1 failed: Connection refused Is the server "
            "running?");
  EXPECT_EQ(one_line("  a \r\n b  "), "a b");
  EXPECT_EQ(one_line(""), "");
}

TEST(QueColumnsQuery, ResolvesLikeTheInsert) {
  // The table found through search_path, as the unqualified INSERT finds it.
  const std::string q = que_columns_query;
  EXPECT_NE(q.find("to_regclass('que_jobs')"), std::string::npos);
  EXPECT_NE(q.find("NOT a.attisdropped"), std::string::npos);
}

}  // namespace
}  // namespace mailroom::delivery
