// Delivery errors, classified by whether a later retry can help. Kept free of
// Asio so that the I/O-free delivery core (job, charset, JWT) can use it.
#pragma once

#include <boost/system/error_code.hpp>

namespace mailroom::delivery {

enum class errc {
  target_unavailable = 1,  // retriable: connection refused/reset, Redis down
  timed_out,               // retriable: no answer in time
  rejected,                // retriable later: the target answered but did not accept (HTTP non-2xx)
  misconfigured = 5,       // not retriable: e.g. unreadable JWT secret
  refused,                 // not retriable for this message: the target refuses it for
                           // good (HTTP 400/413/422, a job above max_job_size); the
                           // message is set aside and the mailbox goes on
};
const boost::system::error_category& delivery_category();
inline boost::system::error_code make_error_code(errc e) {
  return {static_cast<int>(e), delivery_category()};
}

}  // namespace mailroom::delivery

template <>
struct boost::system::is_error_code_enum<mailroom::delivery::errc> : std::true_type {};
