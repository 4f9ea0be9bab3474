// JSON string literals exactly as Ruby's JSON.generate (and String#to_json)
// writes them by default, for everything mailroom must produce byte for byte
// like mail_room: Sidekiq jobs, JWT claims, ERB's to_json in config files.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace mailroom {

// Appends `s` as a JSON string literal (with the quotes): `"` and `\` escaped,
// \b \f \n \r \t short forms, other control characters as \u00XX with
// lowercase hex; "/", DEL, U+2028/U+2029 and all other non-ASCII bytes are
// copied as they are (no ascii_only).
void append_json_string(std::string& out, std::string_view s);

// The same in two steps, for writing into a buffer sized once (bodies can be
// megabytes): the literal's exact length, then the literal written at `out`
// (returns the end).
std::size_t json_string_size(std::string_view s);
char* write_json_string(char* out, std::string_view s);

}  // namespace mailroom
