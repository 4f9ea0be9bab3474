#include "redis/resp/reply.hpp"

#include <fmt/format.h>

namespace mailroom::redis {

std::string to_string(const reply& r, std::size_t max_bulk) {
  switch (r.k) {
    case reply::kind::simple:
      return "+" + r.str;
    case reply::kind::error:
      return "-" + r.str;
    case reply::kind::integer:
      return fmt::format(":{}", r.integer);
    case reply::kind::bulk:
      if (r.str.size() > max_bulk) {
        return fmt::format("${}:{}...", r.str.size(), r.str.substr(0, max_bulk));
      }
      return fmt::format("${}:{}", r.str.size(), r.str);
    case reply::kind::null:
      return "(nil)";
    case reply::kind::array: {
      std::string out = "[";
      for (std::size_t i = 0; i < r.elements.size(); ++i) {
        if (i != 0) out += ", ";
        out += to_string(r.elements[i], max_bulk);
      }
      return out + "]";
    }
  }
  return "?";
}

}  // namespace mailroom::redis
