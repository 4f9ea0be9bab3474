#include "redis/resp/error.hpp"

#include <string>

namespace mailroom::redis {

namespace {

class resp_category_impl : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "mailroom.resp"; }
  std::string message(int ev) const override {
    switch (static_cast<resp_errc>(ev)) {
      case resp_errc::malformed:
        return "malformed RESP reply";
      case resp_errc::line_too_long:
        return "RESP line longer than the limit";
      case resp_errc::bulk_too_long:
        return "RESP bulk string longer than the limit";
      case resp_errc::too_many_elements:
        return "RESP array with more elements than the limit";
      case resp_errc::too_deep:
        return "RESP arrays nested deeper than the limit";
    }
    return "unknown RESP error";
  }
};

}  // namespace

const boost::system::error_category& resp_category() {
  static const resp_category_impl instance;
  return instance;
}

}  // namespace mailroom::redis
