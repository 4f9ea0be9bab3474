// Running coroutines to completion inside a test body, so that gtest's ASSERT_*
// (which `return`) stay outside coroutines.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <exception>
#include <optional>
#include <utility>

namespace mailroom::test_support {

template <typename T>
T run_async(boost::asio::io_context& ctx, boost::asio::awaitable<T> op) {
  std::optional<T> out;
  std::exception_ptr failure;
  boost::asio::co_spawn(ctx, std::move(op), [&](std::exception_ptr e, T value) {
    failure = e;
    if (!e) out.emplace(std::move(value));
  });
  ctx.restart();
  ctx.run();
  if (failure) std::rethrow_exception(failure);
  return std::move(*out);
}

inline void run_async(boost::asio::io_context& ctx, boost::asio::awaitable<void> op) {
  std::exception_ptr failure;
  boost::asio::co_spawn(ctx, std::move(op), [&](std::exception_ptr e) { failure = e; });
  ctx.restart();
  ctx.run();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace mailroom::test_support
