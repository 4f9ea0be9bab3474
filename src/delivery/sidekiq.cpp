#include "delivery/sidekiq.hpp"

#include "delivery/job.hpp"
#include "redis/resp/encoder.hpp"

#include <fmt/format.h>

#include <array>
#include <chrono>
#include <utility>
#include <vector>

namespace mailroom::delivery {

namespace {

// Time.now.to_f: seconds since the epoch with sub-second precision.
double now_as_double() {
  const auto since_epoch = std::chrono::system_clock::now().time_since_epoch();
  return std::chrono::duration<double>(since_epoch).count();
}

}  // namespace

sidekiq_deliverer::sidekiq_deliverer(const config::sidekiq_options& opts,
                                     std::shared_ptr<redis::client> client,
                                     std::shared_ptr<log::logger> logger,
                                     std::uint64_t max_job_size)
    : worker_(opts.worker),
      queue_(opts.queue),
      queue_key_(opts.redis.key("queue:" + opts.queue)),
      client_(std::move(client)),
      logger_(std::move(logger)),
      max_job_size_(max_job_size) {}

boost::asio::awaitable<result> sidekiq_deliverer::deliver(const mail_message& m) {
  utf8_result converted;
  const std::string_view body = job_text(m, "Sidekiq", *logger_, converted);
  // The message's stable id (a redelivery carries the same jid); a random one
  // for callers that did not set it, as mail_room does.
  const std::string jid = m.id.empty() ? make_jid() : m.id;
  // LPUSH <queue key> <job>, with the job JSON-escaped straight into the
  // command that is written to Redis: besides the message itself, the only
  // copy of a multi-megabyte body is the one on its way to the socket.
  const sidekiq_job job(worker_, queue_, body, jid, now_as_double());
  if (max_job_size_ > 0 && job.size() > max_job_size_) {
    co_return result{errc::refused,
                     fmt::format("the job is {} bytes, above max_job_size ({} bytes)", job.size(),
                                 max_job_size_)};
  }
  const std::string_view lpush = "LPUSH";
  const std::array<std::string_view, 2> leading{lpush, queue_key_};
  redis::command_with_slot cmd = redis::encode_command_with_slot(leading, job.size());
  job.write(cmd.bytes.data() + cmd.slot);

  auto r = co_await client_->command_encoded(std::move(cmd.bytes));
  if (!r.has_value()) {
    const auto ec = r.error();
    co_return result{ec == redis::errc::timed_out ? errc::timed_out : errc::target_unavailable,
                     fmt::format("LPUSH {} to {}: {} ({})", queue_key_, client_->describe(),
                                 ec.message(), client_->last_error())};
  }
  if (r->k != redis::reply::kind::integer) {
    co_return result{
        errc::target_unavailable,
        fmt::format("LPUSH {} to {}: {}", queue_key_, client_->describe(), redis::to_string(*r))};
  }
  log_job_pushed(*logger_, "Sidekiq");  // lib/mail_room/delivery/sidekiq.rb
  co_return result{};
}

}  // namespace mailroom::delivery
