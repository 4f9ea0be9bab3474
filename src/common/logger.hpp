// Structured log: one JSON object per line, the shape mail_room writes
// (lib/mail_room/logger/structured.rb): {"severity":"INFO","time":"<ISO 8601 ms>", ...fields}.
// Thread-safe; several mailboxes may share one file.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace mailroom::log {

using fields = nlohmann::ordered_json;

enum class severity { debug, info, warn, error, fatal };
const char* severity_label(severity s);  // "DEBUG", "INFO", "WARN", "ERROR", "FATAL"

class logger {
 public:
  // A logger that writes nowhere (mail_room's default without logger.log_path).
  static std::shared_ptr<logger> discard();
  static std::shared_ptr<logger> to_stdout();
  static std::shared_ptr<logger> to_stderr();
  // Appends to `path`, creating it. Loggers opened on the same path share one file.
  // Returns nullptr and sets `error` when the file cannot be opened.
  static std::shared_ptr<logger> to_file(const std::string& path, std::string& error);
  // Hands each line (JSON, without the newline) to `fn`, under the logger's
  // lock: for tests that wait for a line instead of sleeping.
  static std::shared_ptr<logger> to_function(std::function<void(const std::string& line)> fn);

  ~logger();
  logger(const logger&) = delete;
  logger& operator=(const logger&) = delete;

  // `f` must be an object; severity and time are put first.
  void write(severity s, const fields& f);
  void debug(const fields& f) { write(severity::debug, f); }
  void info(const fields& f) { write(severity::info, f); }
  void warn(const fields& f) { write(severity::warn, f); }
  void error(const fields& f) { write(severity::error, f); }

  // Minimum severity written (default: info; `-q` does not change it).
  void set_min_severity(severity s) { min_ = s; }

  struct sink;  // one per destination; defined in logger.cpp

 private:
  explicit logger(std::shared_ptr<sink> s);
  std::shared_ptr<sink> sink_;
  severity min_ = severity::info;
};

// "2026-11-28T11:08:14.117+00:00": ISO 8601 with milliseconds and UTC offset.
std::string iso8601_now();

}  // namespace mailroom::log
