// RESP2 command encoding: every command is an array of bulk strings
// (https://redis.io/docs/reference/protocol-spec/#send-commands-to-a-redis-server),
// so arguments may hold any bytes, including CR, LF and NUL.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mailroom::redis {

// Appends "*N\r\n$len\r\narg\r\n..." to `out`. Each argument is copied exactly
// once, so a multi-megabyte job JSON goes straight into the write buffer.
void append_command(std::string& out, std::span<const std::string_view> args);
void append_command(std::string& out, std::span<const std::string> args);

// The encoded command as a new string.
std::string encode_command(const std::vector<std::string_view>& args);

// A command whose last argument, `last_size` bytes long, is left for the
// caller to write in place: bytes[slot, slot + last_size) (filled with NUL
// until then). A multi-megabyte argument (a Sidekiq job) is then produced
// once, directly in the buffer that goes on the wire.
struct command_with_slot {
  std::string bytes;
  std::size_t slot = 0;
};
command_with_slot encode_command_with_slot(std::span<const std::string_view> leading,
                                           std::size_t last_size);

}  // namespace mailroom::redis
