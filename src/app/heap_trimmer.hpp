// Gives the heap that a burst of TLS handshakes leaves free back to the OS.
//
// A handshake needs about 50 KiB for a moment (OpenSSL's 16 KiB handshake
// buffer, its record buffers, key exchange), allocated between what each
// session keeps. glibc returns no free memory by itself (and keeps message
// buffers in the heap on purpose, common/allocator.hpp), so after 1,000
// mailboxes connected at once 16.7 MB stayed free inside the heap and counted
// in RSS (bench/RESULTS.md). malloc_trim(3) releases those pages.
//
// Event-driven: a handshake arms a one-second timer; the heap is trimmed at
// the first tick without a new handshake (or after ten ticks of steady
// churn). With no handshakes nothing wakes up.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>

namespace mailroom::app {

// When to trim (no I/O, no clock): fed the process's handshake count.
class trim_policy {
 public:
  explicit trim_policy(int max_ticks = 10) : max_ticks_(max_ticks) {}
  // A handshake started; true when the timer must be armed (it was idle).
  bool on_handshake(std::uint64_t handshakes);
  // The timer fired; true: trim now, and the timer stays idle until the next
  // handshake; false: arm it for one more tick.
  bool on_tick(std::uint64_t handshakes);
  bool armed() const { return armed_; }

 private:
  int max_ticks_;
  bool armed_ = false;
  std::uint64_t seen_ = 0;
  int ticks_ = 0;
};

class heap_trimmer {
 public:
  explicit heap_trimmer(boost::asio::any_io_executor ex,
                        std::chrono::milliseconds tick = std::chrono::seconds(1));
  ~heap_trimmer();
  heap_trimmer(const heap_trimmer&) = delete;
  heap_trimmer& operator=(const heap_trimmer&) = delete;
  // Watches TLS handshakes (net::set_handshake_hook) until stop().
  void start();
  void stop();

 private:
  void handshake();
  void arm();
  boost::asio::steady_timer timer_;
  std::chrono::milliseconds tick_;
  trim_policy policy_;
  bool stopped_ = true;
};

}  // namespace mailroom::app
