// Mailbox names on the wire: modified UTF-7 (RFC 3501 §5.1.3). Printable
// US-ASCII except "&" stands for itself, "&" is "&-", and everything else is
// UTF-16 in modified BASE64 (with "," for "/", no padding) between "&" and "-".
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace mailroom::imap {

/// UTF-8 to modified UTF-7; nullopt if `utf8` is not valid UTF-8.
std::optional<std::string> encode_mailbox_utf7(std::string_view utf8);

/// Modified UTF-7 (e.g. from a LIST response) to UTF-8; nullopt if malformed.
std::optional<std::string> decode_mailbox_utf7(std::string_view mutf7);

}  // namespace mailroom::imap
