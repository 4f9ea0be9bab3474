// Test helpers for deliverers that need no server: run one delivery to
// completion on a private io_context, read a file back whole.
#pragma once

#include "delivery/deliverer.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <exception>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace mailroom::delivery::test {

inline result deliver_sync(deliverer& d, const mail_message& m) {
  boost::asio::io_context ctx;
  std::optional<result> out;
  boost::asio::co_spawn(ctx, d.deliver(m), [&](std::exception_ptr e, result r) {
    if (e) std::rethrow_exception(e);
    out = std::move(r);
  });
  ctx.run();
  return *out;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace mailroom::delivery::test
