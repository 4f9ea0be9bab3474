// One RESP2 reply as the server sent it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mailroom::redis {

struct reply {
  // RESP2 has five types; the null bulk string ($-1) and the null array (*-1)
  // both become `null` because no caller distinguishes them (SET NX answers $-1).
  enum class kind { simple, error, integer, bulk, null, array };

  kind k = kind::null;
  std::string str;              // simple, error, bulk
  std::int64_t integer = 0;     // integer
  std::vector<reply> elements;  // array

  bool is_error() const { return k == kind::error; }
  bool is_null() const { return k == kind::null; }
  // A simple string equal to `s` ("+OK").
  bool is_simple(std::string_view s) const { return k == kind::simple && str == s; }
  // The first word of an error reply ("READONLY", "WRONGPASS"), empty otherwise.
  std::string_view error_code() const {
    if (k != kind::error) return {};
    std::string_view v = str;
    return v.substr(0, v.find(' '));
  }

  static reply simple(std::string s) { return reply{kind::simple, std::move(s), 0, {}}; }
  static reply error(std::string s) { return reply{kind::error, std::move(s), 0, {}}; }
  static reply bulk(std::string s) { return reply{kind::bulk, std::move(s), 0, {}}; }
  static reply number(std::int64_t i) { return reply{kind::integer, {}, i, {}}; }
  static reply nil() { return reply{}; }
  static reply array(std::vector<reply> e) { return reply{kind::array, {}, 0, std::move(e)}; }

  bool operator==(const reply&) const = default;
};

// Compact human form for logs and test failure messages: "+OK", "-ERR x", ":3",
// "$5:hello", "(nil)", "[+OK, :1]". Bulk payloads are cut at `max_bulk` bytes.
std::string to_string(const reply& r, std::size_t max_bulk = 64);

}  // namespace mailroom::redis
