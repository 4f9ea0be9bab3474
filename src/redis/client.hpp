// A Redis client for mailroom's few commands (LPUSH, SET NX EX, DEL), shared by
// all mailbox coroutines of one io_context thread.
//
// Connection setup follows redis-rb as mail_room uses it (mail_room-behaviour
// §3.2, §4.2): TCP (+ TLS for rediss://), AUTH [username] password, SELECT db
// when db != 0. With sentinels, target.host is the master NAME: each sentinel in
// turn is asked SENTINEL get-master-addr-by-name, and the address it gives is
// checked with ROLE (after a failover the old master claims "master" for ~10 s,
// so Sentinel's answer is trusted first and ROLE only rejects stale answers).
// The master is re-resolved on every reconnect.
//
// Pipelining: commands issued while a round trip is in flight are queued and
// written together in the next one, so N concurrent callers cost about one
// round trip per batch, not N. Replies are matched to callers in order.
#pragma once

#include "config/model.hpp"
#include "net/stream.hpp"
#include "redis/error.hpp"
#include "redis/resp/parser.hpp"
#include "redis/resp/reply.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace mailroom::redis {

struct client_options {
  // TCP connect, TLS handshake, and each setup command (AUTH, SELECT, ROLE,
  // SENTINEL) on the master and on each sentinel.
  net::duration connect_timeout = std::chrono::seconds(5);
  // Writing a batch, and waiting for each next chunk of its replies.
  net::duration command_timeout = std::chrono::seconds(10);
  // With sentinels: before writing, re-ask a sentinel for the master when the
  // last answer is older than this, and reconnect if it moved. After a
  // failover the old master accepts (and later discards) writes for ~10 s
  // until Sentinel demotes it (dependencies-and-test-servers pitfall 9); this
  // bounds that window. Zero: only re-resolve on reconnect.
  net::duration sentinel_recheck_interval = std::chrono::seconds(1);
  resp_limits limits;
};

class client {
 public:
  // Does no I/O: the first command connects.
  client(boost::asio::any_io_executor ex, config::redis_target target, client_options opts = {});
  // Aborts the connection; pending commands fail with operation_aborted.
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  // Sends one command (connecting on demand) and returns its reply. An error
  // reply (`-ERR ...`) is a reply of kind error, not a failure. Failures are
  // redis::errc values (see error.hpp); after one the connection is closed and
  // the next call reconnects. A `-READONLY` reply also closes the connection:
  // we are talking to a demoted master and must re-resolve.
  // Must be called on the client's executor; any number of coroutines may wait
  // at once. Cancelling a caller abandons its reply, not the command.
  boost::asio::awaitable<boost::system::result<reply>> command(std::vector<std::string> args);

  // The same for a command the caller encoded (resp/encoder.hpp): `encoded`
  // must hold exactly one complete RESP command. It is moved onto the write
  // queue as it is, so a multi-megabyte command is never copied.
  boost::asio::awaitable<boost::system::result<reply>> command_encoded(std::string encoded);

  // Sends all commands in one write and returns their replies in order; same
  // failure rules as command(). Not a transaction: a failure may leave some
  // of the commands executed.
  boost::asio::awaitable<boost::system::result<std::vector<reply>>> pipeline(
      std::vector<std::vector<std::string>> commands);

  // Closes the connection and waits until nothing is in flight; commands that
  // were waiting fail with operation_aborted. A later command() reconnects.
  boost::asio::awaitable<void> close();

  // "redis://127.0.0.1:6379/0" (never the password), or "sentinel master mymaster".
  std::string describe() const;
  // "127.0.0.1:6380" while connected (the resolved master with sentinels), else "".
  std::string connected_address() const;
  // Detail of the most recent failure ("connect to 127.0.0.1:6379: Connection
  // refused"), for logs. Never contains a password.
  std::string last_error() const;

  const config::redis_target& target() const;

 private:
  struct state;
  std::shared_ptr<state> state_;
};

}  // namespace mailroom::redis
