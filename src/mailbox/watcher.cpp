#include "mailbox/watcher.hpp"

#include <random>

namespace mailroom::mailbox {

log::fields watcher::context_line(const char* action) const {
  log::fields f;
  f["context"] = {{"email", mb_.email}, {"name", mb_.name}};
  f["action"] = action;
  return f;
}

std::chrono::milliseconds watcher::jittered(std::chrono::milliseconds d) {
  static thread_local std::minstd_rand rng{std::random_device{}()};
  std::uniform_real_distribution<double> f(0.8, 1.2);
  return std::chrono::milliseconds(static_cast<std::int64_t>(d.count() * f(rng)));
}

}  // namespace mailroom::mailbox
