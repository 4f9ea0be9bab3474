#include "delivery/que_sql.hpp"

#include "common/json_string.hpp"

#include <algorithm>
#include <array>
#include <cctype>

namespace mailroom::delivery {

const char* que_layout_name(que_layout l) {
  switch (l) {
    case que_layout::v0:
      return "Que 0.x";
    case que_layout::v1:
      return "Que 1.x";
    case que_layout::v2:
      return "Que 2.x";
  }
  return "Que";
}

const char* const que_columns_query =
    "SELECT a.attname, a.attnotnull, a.atthasdef FROM pg_catalog.pg_attribute a "
    "WHERE a.attrelid = pg_catalog.to_regclass('que_jobs') AND a.attnum > 0 "
    "AND NOT a.attisdropped ORDER BY a.attnum";

namespace {

const que_column* find(const std::vector<que_column>& columns, std::string_view name) {
  const auto it = std::find_if(columns.begin(), columns.end(),
                               [&](const que_column& c) { return c.name == name; });
  return it == columns.end() ? nullptr : &*it;
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

}  // namespace

std::optional<que_table> detect_que_table(const std::vector<que_column>& columns,
                                          std::string& why) {
  if (columns.empty()) {
    why =
        "table que_jobs does not exist (or is not on the search_path): create it with Que's "
        "migrations";
    return std::nullopt;
  }
  for (const char* required : {"priority", "job_class", "args"}) {
    if (find(columns, required) == nullptr) {
      why = std::string("table que_jobs has no column ") + required +
            ": not a Que 0.x, 1.x or 2.x que_jobs table";
      return std::nullopt;
    }
  }
  que_table t;
  t.has_queue = find(columns, "queue") != nullptr;
  t.has_kwargs = find(columns, "kwargs") != nullptr;
  const que_column* version = find(columns, "job_schema_version");
  const bool version_required = version != nullptr && version->not_null && !version->has_default;
  if (t.has_kwargs || version_required) {
    t.layout = que_layout::v2;
    t.writes_job_schema_version = version != nullptr;
  } else if (find(columns, "job_id") != nullptr) {
    t.layout = que_layout::v0;  // Que 1 renamed it to id
  } else {
    t.layout = que_layout::v1;
  }
  return t;
}

std::optional<que_statement> make_que_insert(const que_table& table, bool with_queue,
                                             std::string& why) {
  if (with_queue && !table.has_queue) {
    why =
        "table que_jobs has no column queue (a Que 0.x schema before migration 3) but a queue "
        "is configured";
    return std::nullopt;
  }
  que_statement s;
  s.params = {que_param::priority, que_param::job_class};
  if (with_queue) s.params.push_back(que_param::queue);
  s.params.push_back(que_param::args);
  if (table.has_kwargs) s.params.push_back(que_param::kwargs);
  if (table.writes_job_schema_version) s.params.push_back(que_param::job_schema_version);

  // The column of each que_param, in the enum's order.
  static constexpr const char* column[] = {"priority", "job_class", "queue",
                                           "args",     "kwargs",    "job_schema_version"};
  std::string columns;
  std::string values;
  for (std::size_t i = 0; i < s.params.size(); ++i) {
    if (i != 0) {
      columns += ", ";
      values += ", ";
    }
    columns += column[static_cast<std::size_t>(s.params[i])];
    values += "$" + std::to_string(i + 1);
  }
  s.sql = "INSERT INTO que_jobs (" + columns + ") VALUES (" + values + ")";
  return s;
}

std::size_t que_args_json_size(std::string_view utf8_message) {
  return json_string_size(utf8_message) + 2;
}

std::string que_args_json(std::string_view utf8_message) {
  std::string out(que_args_json_size(utf8_message), '\0');
  char* p = out.data();
  *p++ = '[';
  p = write_json_string(p, utf8_message);
  *p = ']';
  return out;
}

errc classify_sqlstate(std::string_view sqlstate) {
  if (sqlstate.size() != 5) return errc::target_unavailable;
  if (sqlstate == "57014") return errc::timed_out;
  // The message's own text cannot be stored: it never will be.
  if (sqlstate == "22P05" || sqlstate == "22021" || sqlstate == "22P02" ||
      starts_with(sqlstate, "54")) {
    return errc::refused;
  }
  if (sqlstate == "25006") return errc::target_unavailable;  // read-only (a standby)
  if (sqlstate == "P0001") return errc::misconfigured;       // RAISE in a trigger on que_jobs
  static constexpr std::array<std::string_view, 5> misconfigured_classes{"42", "23", "28", "3D",
                                                                         "3F"};
  const std::string_view cls = sqlstate.substr(0, 2);
  for (const auto c : misconfigured_classes) {
    if (cls == c) return errc::misconfigured;
  }
  if (cls == "22") return errc::misconfigured;  // e.g. priority out of range for smallint
  return errc::target_unavailable;
}

bool que_layout_may_be_stale(std::string_view sqlstate) {
  return sqlstate == "42P01" || sqlstate == "42703" || sqlstate == "23502";
}

errc classify_connect_error(std::string_view message) {
  static constexpr std::array<std::string_view, 11> misconfigured_markers{
      "password authentication failed",
      "no pg_hba.conf entry",
      "does not exist",  // database or role
      "no password supplied",
      "authentication method",  // e.g. "authentication method requirement"
      "is not permitted to log in",
      "permission denied for database",
      "SSL was required",
      "server does not support SSL",
      "invalid connection option",
      "invalid sslmode value",
  };
  for (const auto m : misconfigured_markers) {
    if (contains(message, m)) return errc::misconfigured;
  }
  if (contains(message, "timeout expired")) return errc::timed_out;
  return errc::target_unavailable;
}

std::string one_line(std::string_view message) {
  std::string out;
  out.reserve(message.size());
  bool space = false;
  for (const char c : message) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      space = true;
      continue;
    }
    if (space && !out.empty()) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

}  // namespace mailroom::delivery
