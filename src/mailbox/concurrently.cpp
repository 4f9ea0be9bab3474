#include "mailbox/concurrently.hpp"

#include <algorithm>

namespace mailroom::mailbox {

namespace {

struct key_queue {
  key_step step;
  std::vector<std::uint32_t> keys;
  std::size_t next = 0;
  bool stopped = false;
};

// A named function rather than a lambda: g++ 12 mis-destroys the captures of
// a lambda coroutine passed to co_spawn.
boost::asio::awaitable<bool> take_keys(std::shared_ptr<key_queue> q) {
  while (!q->stopped && q->next < q->keys.size()) {
    const std::uint32_t key = q->keys[q->next++];
    if (!co_await q->step(key)) q->stopped = true;
  }
  co_return true;
}

}  // namespace

boost::asio::awaitable<void> for_each_concurrently(boost::asio::any_io_executor ex,
                                                   std::vector<std::uint32_t> keys, std::size_t n,
                                                   key_step step) {
  auto q = std::make_shared<key_queue>();
  q->step = std::move(step);
  q->keys = std::move(keys);
  std::vector<boost::asio::awaitable<bool>> workers;
  for (std::size_t i = 0; i < std::min(std::max<std::size_t>(n, 1), q->keys.size()); ++i)
    workers.push_back(take_keys(q));
  co_await run_all(ex, std::move(workers));
}

}  // namespace mailroom::mailbox
