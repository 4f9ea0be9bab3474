// Output of the listing commands: a table for people, JSON for scripts. Rows
// are written as they come, so thousands of messages scroll without a pause.
#pragma once

#include "ops/common.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

namespace mailroom::ops {

// "2026-11-29 10:15 UTC"; "-" when absent.
std::string format_time(std::optional<std::int64_t> t);
// "2026-11-29T10:15:00Z"; JSON null when absent.
nlohmann::ordered_json json_time(std::optional<std::int64_t> t);

// Header text made safe for a terminal: control characters (escape sequences
// in a hostile Subject) become spaces.
std::string printable(std::string_view s);

// The object --json prints for one message.
nlohmann::ordered_json message_json(const listed_message& m, std::int64_t now);

// Dumps JSON as UTF-8, replacing invalid bytes instead of throwing.
std::string dump(const nlohmann::ordered_json& j, int indent = -1);

class message_listing {
 public:
  message_listing(std::ostream& out, bool json, std::int64_t now);
  void header();
  void row(const listed_message& m);
  void footer();
  std::size_t rows() const { return rows_; }

 private:
  std::ostream& out_;
  bool json_;
  std::int64_t now_;
  std::size_t rows_ = 0;
};

// One line as the runbook prints it:
// "@<date> (<age>) from <from> to <to>. Subject: <subject>".
std::string runbook_line(const listed_message& m, std::int64_t now);

}  // namespace mailroom::ops
