#include "redis/error.hpp"

#include <boost/asio/error.hpp>

#include <string>

namespace mailroom::redis {

namespace {

class redis_category_impl : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "mailroom.redis"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::connection_failed:
        return "cannot connect to Redis or the connection was lost";
      case errc::timed_out:
        return "Redis did not answer in time";
      case errc::protocol_error:
        return "Redis sent a reply that is not valid RESP2";
      case errc::server_error:
        return "Redis rejected a connection setup command";
      case errc::no_master:
        return "no Redis master found through the sentinels";
      case errc::auth_failed:
        return "Redis rejected the credentials";
    }
    return "unknown Redis client error";
  }
};

}  // namespace

const boost::system::error_category& redis_category() {
  static const redis_category_impl instance;
  return instance;
}

bool is_retriable(const boost::system::error_code& ec) {
  if (ec.category() != redis_category()) return false;
  switch (static_cast<errc>(ec.value())) {
    case errc::connection_failed:
    case errc::timed_out:
    case errc::protocol_error:
    case errc::no_master:
      return true;
    case errc::server_error:
    case errc::auth_failed:
      return false;
  }
  return false;
}

}  // namespace mailroom::redis
