#include "delivery/logger_delivery.hpp"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

namespace mailroom::delivery {

std::string ruby_logger_info_prefix() {
  using namespace std::chrono;
  const auto now = system_clock::now();
  const auto usec = duration_cast<microseconds>(now.time_since_epoch()).count() % 1000000;
  const std::time_t t = system_clock::to_time_t(now);
  std::tm local{};
  localtime_r(&t, &local);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &local);
  // Logger::Formatter: "%.1s, [%s #%d] %5s -- %s: %s\n" with an empty progname.
  char out[96];
  std::snprintf(out, sizeof out, "I, [%s.%06d #%d]  INFO -- : ", stamp, static_cast<int>(usec),
                static_cast<int>(::getpid()));
  return out;
}

logger_deliverer::logger_deliverer(const config::logger_delivery_options& options)
    : path_(options.log_path) {}

logger_deliverer::~logger_deliverer() {
  if (owned_ && file_ != nullptr) std::fclose(file_);
}

boost::asio::awaitable<result> logger_deliverer::deliver(const mail_message& m) {
  if (file_ == nullptr) {
    if (path_.empty()) {
      file_ = stdout;
    } else {
      file_ = std::fopen(path_.c_str(), "a");
      if (file_ == nullptr) {
        co_return result{make_error_code(errc::misconfigured),
                         "cannot open " + path_ + ": " + std::strerror(errno)};
      }
      owned_ = true;
    }
  }
  const std::string prefix = ruby_logger_info_prefix();
  // One message is written and flushed before the next delivery starts (all on
  // the loop thread), so messages from mailboxes sharing a file never interleave.
  const bool ok = std::fwrite(prefix.data(), 1, prefix.size(), file_) == prefix.size() &&
                  std::fwrite(m.body.data(), 1, m.body.size(), file_) == m.body.size() &&
                  std::fputc('\n', file_) != EOF && std::fflush(file_) == 0;
  if (!ok) {
    const int err = errno;
    std::clearerr(file_);
    co_return result{make_error_code(errc::target_unavailable),
                     "cannot write to " + (path_.empty() ? std::string("stdout") : path_) + ": " +
                         std::strerror(err)};
  }
  co_return result{};
}

}  // namespace mailroom::delivery
