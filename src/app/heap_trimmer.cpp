#include "app/heap_trimmer.hpp"

#include "common/allocator.hpp"
#include "net/tls_context.hpp"

#include <boost/asio/post.hpp>

namespace mailroom::app {

bool trim_policy::on_handshake(std::uint64_t handshakes) {
  if (armed_) return false;
  armed_ = true;
  seen_ = handshakes;
  ticks_ = 0;
  return true;
}

bool trim_policy::on_tick(std::uint64_t handshakes) {
  ++ticks_;
  if (handshakes != seen_ && ticks_ < max_ticks_) {  // the burst goes on
    seen_ = handshakes;
    return false;
  }
  armed_ = false;
  return true;
}

heap_trimmer::heap_trimmer(boost::asio::any_io_executor ex, std::chrono::milliseconds tick)
    : timer_(ex), tick_(tick) {}

heap_trimmer::~heap_trimmer() {
  stop();
}

void heap_trimmer::start() {
  stopped_ = false;
  // Handshakes run on this executor's thread or another: the hook only posts.
  auto ex = timer_.get_executor();
  net::set_handshake_hook([this, ex] { boost::asio::post(ex, [this] { handshake(); }); });
}

void heap_trimmer::stop() {
  if (stopped_) return;
  stopped_ = true;
  net::set_handshake_hook(nullptr);
  timer_.cancel();
}

void heap_trimmer::handshake() {
  if (!stopped_ && policy_.on_handshake(net::tls_handshakes())) arm();
}

void heap_trimmer::arm() {
  timer_.expires_after(tick_);
  timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || stopped_) return;
    if (policy_.on_tick(net::tls_handshakes())) {
      allocator::release_free_memory();
    } else {
      arm();
    }
  });
}

}  // namespace mailroom::app
