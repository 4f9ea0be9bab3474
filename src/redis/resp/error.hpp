// Errors of the RESP parser. Every one of them means the byte stream can no
// longer be trusted: the owner drops the connection (and may open a new one).
#pragma once

#include <boost/system/error_code.hpp>

#include <type_traits>

namespace mailroom::redis {

enum class resp_errc {
  malformed = 1,      // not RESP2: unknown type byte, bad number, missing CRLF
  line_too_long,      // a header/simple line exceeds resp_limits::max_line_length
  bulk_too_long,      // a bulk string announces more than resp_limits::max_bulk_length
  too_many_elements,  // an array announces more than resp_limits::max_array_elements
  too_deep,           // arrays nested deeper than resp_limits::max_depth
};

const boost::system::error_category& resp_category();
inline boost::system::error_code make_error_code(resp_errc e) {
  return {static_cast<int>(e), resp_category()};
}

}  // namespace mailroom::redis

template <>
struct boost::system::is_error_code_enum<mailroom::redis::resp_errc> : std::true_type {};
