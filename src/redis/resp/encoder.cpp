#include "redis/resp/encoder.hpp"

#include <fmt/format.h>

#include <cstring>
#include <iterator>

namespace mailroom::redis {

namespace {

template <typename String>
void append_all(std::string& out, std::span<const String> args) {
  std::size_t total = 16;
  for (const auto& a : args) total += a.size() + 24;  // "$<len>\r\n" + payload + "\r\n"
  out.reserve(out.size() + total);
  fmt::format_to(std::back_inserter(out), "*{}\r\n", args.size());
  for (const auto& a : args) {
    fmt::format_to(std::back_inserter(out), "${}\r\n", a.size());
    out.append(a.data(), a.size());
    out.append("\r\n", 2);
  }
}

}  // namespace

void append_command(std::string& out, std::span<const std::string_view> args) {
  append_all(out, args);
}

void append_command(std::string& out, std::span<const std::string> args) {
  append_all(out, args);
}

std::string encode_command(const std::vector<std::string_view>& args) {
  std::string out;
  append_command(out, std::span<const std::string_view>(args));
  return out;
}

command_with_slot encode_command_with_slot(std::span<const std::string_view> leading,
                                           std::size_t last_size) {
  std::string head;
  fmt::format_to(std::back_inserter(head), "*{}\r\n", leading.size() + 1);
  for (const auto& a : leading) {
    fmt::format_to(std::back_inserter(head), "${}\r\n", a.size());
    head.append(a.data(), a.size());
    head.append("\r\n", 2);
  }
  fmt::format_to(std::back_inserter(head), "${}\r\n", last_size);
  command_with_slot out;
  out.bytes.resize(head.size() + last_size + 2);
  std::memcpy(out.bytes.data(), head.data(), head.size());
  out.slot = head.size();
  std::memcpy(out.bytes.data() + out.slot + last_size, "\r\n", 2);
  return out;
}

}  // namespace mailroom::redis
