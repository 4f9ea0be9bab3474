// Errors of the Redis client, classified by what the caller can do about them.
#pragma once

#include <boost/system/error_code.hpp>

#include <type_traits>

namespace mailroom::redis {

// An error reply to a command (`-ERR ...`, `-WRONGTYPE ...`) is NOT one of
// these: client::command() returns it as a reply of kind error and keeps the
// connection. These codes mean the command got no reply from a usable server.
enum class errc {
  // Retriable: TCP/TLS connect failed, or the connection broke while the
  // command was written or its reply awaited. A command that was written may
  // have been executed (the reply was lost): callers must tolerate repeats.
  connection_failed = 1,
  // Retriable: no answer within connect_timeout / command_timeout. As above, a
  // written command may have been executed.
  timed_out,
  // Retriable on a new connection: the server sent bytes that are not RESP2 or
  // exceed resp_limits (something other than Redis is listening?).
  protocol_error,
  // Not retriable without operator action: during connection setup the server
  // rejected SELECT (db out of range) or answered ROLE with an error.
  server_error,
  // Retriable: no sentinel answered, none knew the master name, or the address
  // given is unreachable or not (yet) a master. Usual during a failover.
  no_master,
  // Not retriable without operator action: AUTH rejected (wrong password, ACL
  // user disabled), by the server or by a sentinel.
  auth_failed,
};

const boost::system::error_category& redis_category();
inline boost::system::error_code make_error_code(errc e) {
  return {static_cast<int>(e), redis_category()};
}

// True for codes where the same call may succeed later with no configuration
// change (see each enumerator).
bool is_retriable(const boost::system::error_code& ec);

}  // namespace mailroom::redis

template <>
struct boost::system::is_error_code_enum<mailroom::redis::errc> : std::true_type {};
