// Helpers for tests that drive coroutines on an io_context: a one-shot event a
// server thread can raise to wake a coroutine, and a bounded run.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <exception>
#include <memory>

namespace mailroom::test {

// Raised once, from any thread; awaited on the executor it was made for.
class async_flag {
 public:
  explicit async_flag(boost::asio::any_io_executor ex) : state_(std::make_shared<state>(ex)) {}

  // Thread-safe: the change happens on the executor.
  void set() const {
    boost::asio::post(state_->timer.get_executor(), [s = state_] {
      s->raised = true;
      s->timer.cancel();
    });
  }
  bool is_set() const { return state_->raised; }

  boost::asio::awaitable<void> wait() {
    auto s = state_;
    while (!s->raised) {
      boost::system::error_code ec;
      co_await s->timer.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    }
  }

 private:
  struct state {
    explicit state(boost::asio::any_io_executor ex)
        : timer(ex, std::chrono::steady_clock::time_point::max()) {}
    boost::asio::steady_timer timer;
    bool raised = false;
  };
  std::shared_ptr<state> state_;
};

struct bounded_run {
  bool finished = false;
  std::exception_ptr failure;
  std::chrono::milliseconds elapsed{0};
};

// Runs `op` on `io` until it completes and the io_context runs out of work,
// or `limit` passes. The io_context running out of work is the only
// synchronisation point.
inline bounded_run run_bounded(boost::asio::io_context& io, boost::asio::awaitable<void> op,
                               std::chrono::milliseconds limit) {
  // Shared with the completion handler, which may still run after a timeout.
  auto out = std::make_shared<bounded_run>();
  const auto start = std::chrono::steady_clock::now();
  boost::asio::co_spawn(io, std::move(op), [out, start](std::exception_ptr e) {
    out->finished = true;
    out->failure = e;
    out->elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
  });
  io.restart();
  io.run_for(limit);
  return *out;
}

}  // namespace mailroom::test
