// Running several coroutines of one mailbox at once, on its event loop.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

namespace mailroom::mailbox {

// Runs the operations concurrently and returns their results in input order.
// The Redis client pipelines concurrent commands and the HTTP client runs
// requests on its pool, so a batch costs about one round trip, not one each.
template <typename T>
boost::asio::awaitable<std::vector<T>> run_all(boost::asio::any_io_executor ex,
                                               std::vector<boost::asio::awaitable<T>> ops) {
  namespace asio = boost::asio;
  // A ranged parallel_group over no operations never completes.
  if (ops.empty()) co_return std::vector<T>{};
  using op_type = decltype(asio::co_spawn(ex, std::declval<asio::awaitable<T>>(), asio::deferred));
  std::vector<op_type> spawned;
  spawned.reserve(ops.size());
  for (auto& op : ops) spawned.push_back(asio::co_spawn(ex, std::move(op), asio::deferred));
  auto [order, exceptions, results] =
      co_await asio::experimental::make_parallel_group(std::move(spawned))
          .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
  for (const auto& e : exceptions)
    if (e) std::rethrow_exception(e);
  co_return std::move(results);
}

// Runs `step` for each key, at most `n` at once, starting them in key order;
// `step` returning false leaves the keys not yet started alone. Waits for
// all that started.
using key_step = std::function<boost::asio::awaitable<bool>(std::uint32_t)>;
boost::asio::awaitable<void> for_each_concurrently(boost::asio::any_io_executor ex,
                                                   std::vector<std::uint32_t> keys, std::size_t n,
                                                   key_step step);

}  // namespace mailroom::mailbox
