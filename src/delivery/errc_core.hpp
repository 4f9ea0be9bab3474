// The delivery error codes for the I/O-free core (job, charset, JWT).
//
// deliverer.hpp defines `errc` but also includes Asio, whose error categories
// live in the separately compiled Asio of mailroom_net; mailroom_delivery_core
// must link without it. So the core names the same values here; postback.cpp
// static_asserts that they match `errc`.
#pragma once

#include <boost/system/error_code.hpp>

namespace mailroom::delivery {

const boost::system::error_category& delivery_category();  // errors.cpp

namespace core_errc {
inline constexpr int target_unavailable = 1;
inline constexpr int timed_out = 2;
inline constexpr int rejected = 3;
inline constexpr int bad_message = 4;
inline constexpr int misconfigured = 5;
}  // namespace core_errc

inline boost::system::error_code make_core_error_code(int value) {
  return {value, delivery_category()};
}

}  // namespace mailroom::delivery
