#include "common/logger.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <map>

namespace mailroom::log {

const char* severity_label(severity s) {
  switch (s) {
    case severity::debug:
      return "DEBUG";
    case severity::info:
      return "INFO";
    case severity::warn:
      return "WARN";
    case severity::error:
      return "ERROR";
    case severity::fatal:
      return "FATAL";
  }
  return "ANY";
}

std::string iso8601_now() {
  using namespace std::chrono;
  const auto now = system_clock::now();
  const auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  const std::time_t t = system_clock::to_time_t(now);
  std::tm local{};
  localtime_r(&t, &local);
  char base[32];
  std::strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &local);
  // %z gives +0000; Ruby's DateTime#iso8601 writes +00:00.
  char zone[8];
  std::strftime(zone, sizeof zone, "%z", &local);
  char out[64];
  std::snprintf(out, sizeof out, "%s.%03d%.3s:%.2s", base, static_cast<int>(ms), zone, zone + 3);
  return out;
}

// One sink per destination; loggers opened on the same path share it so that
// lines from several mailboxes never interleave mid-line.
struct logger::sink {
  std::FILE* file = nullptr;
  std::function<void(const std::string&)> function;  // instead of a file
  bool owned = false;
  std::mutex mutex;
  ~sink() {
    if (owned && file) std::fclose(file);
  }
};

namespace {
std::mutex registry_mutex;
std::map<std::string, std::weak_ptr<logger::sink>>& file_registry() {
  static std::map<std::string, std::weak_ptr<logger::sink>> r;
  return r;
}
}  // namespace

logger::logger(std::shared_ptr<sink> s) : sink_(std::move(s)) {}
logger::~logger() = default;

std::shared_ptr<logger> logger::discard() {
  return std::shared_ptr<logger>(new logger(nullptr));
}

std::shared_ptr<logger> logger::to_stdout() {
  static auto s = [] {
    auto x = std::make_shared<sink>();
    x->file = stdout;
    return x;
  }();
  return std::shared_ptr<logger>(new logger(s));
}

std::shared_ptr<logger> logger::to_stderr() {
  static auto s = [] {
    auto x = std::make_shared<sink>();
    x->file = stderr;
    return x;
  }();
  return std::shared_ptr<logger>(new logger(s));
}

std::shared_ptr<logger> logger::to_file(const std::string& path, std::string& error) {
  std::lock_guard lock(registry_mutex);
  auto& reg = file_registry();
  if (auto it = reg.find(path); it != reg.end()) {
    if (auto s = it->second.lock()) return std::shared_ptr<logger>(new logger(s));
  }
  std::FILE* f = std::fopen(path.c_str(), "a");
  if (!f) {
    error = "cannot open log file " + path + ": " + std::strerror(errno);
    return nullptr;
  }
  auto s = std::make_shared<sink>();
  s->file = f;
  s->owned = true;
  reg[path] = s;
  return std::shared_ptr<logger>(new logger(s));
}

std::shared_ptr<logger> logger::to_function(std::function<void(const std::string&)> fn) {
  auto s = std::make_shared<sink>();
  s->function = std::move(fn);
  return std::shared_ptr<logger>(new logger(s));
}

void logger::write(severity s, const fields& f) {
  if (!sink_ || s < min_) return;
  // {"severity":..,"time":.., then the caller's fields in their order}. The
  // fields are serialised where they are rather than copied into a new
  // object first: a drain writes a few lines per message.
  std::string text = R"({"severity":")";
  text += severity_label(s);
  text += R"(","time":")";
  text += iso8601_now();
  text += '"';
  const auto handler = nlohmann::ordered_json::error_handler_t::replace;
  if (f.is_object()) {
    // Invalid UTF-8 in a field (e.g. a server's error text) must not throw.
    const std::string body = f.dump(-1, ' ', false, handler);
    if (body.size() > 2) {  // not "{}"
      text += ',';
      text.append(body, 1, std::string::npos);
    } else {
      text += '}';
    }
  } else {
    text += R"(,"message":)";
    text += f.dump(-1, ' ', false, handler);
    text += '}';
  }
  std::lock_guard lock(sink_->mutex);
  if (sink_->function) {
    sink_->function(text);
    return;
  }
  text.push_back('\n');
  std::fwrite(text.data(), 1, text.size(), sink_->file);
  std::fflush(sink_->file);
}

}  // namespace mailroom::log
