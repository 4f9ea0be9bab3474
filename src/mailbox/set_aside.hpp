// Where a set-aside message goes, by why it is set aside: flagged with a
// keyword (an Outlook category on Graph) that keeps it out of later passes,
// or moved to a folder. The message stays unread either way, for an
// operator's `mailroom reingest`.
#pragma once

#include "config/model.hpp"
#include "mailbox/pass_engine.hpp"

#include <string>

namespace mailroom::mailbox {

struct aside_policy {
  const char* why;      // the log line
  std::string keyword;  // always set: the fallback when the move is refused
  std::string folder;   // empty: flag only
};

inline aside_policy aside_policy_for(const config::mailbox& mb, aside_reason r) {
  switch (r) {
    case aside_reason::oversize:
      return {"message too large, not delivered", mb.oversize_keyword,
              mb.on_oversize == config::oversize_action::move ? mb.oversize_folder : ""};
    case aside_reason::too_old:
      return {"message older than max_message_age, not delivered", mb.too_old_keyword,
              mb.too_old_folder};
    case aside_reason::refused:
      return {"message refused by the target, set aside", mb.rejected_keyword, mb.rejected_folder};
  }
  return {"set aside", mb.oversize_keyword, ""};
}

// Set by `mailroom reingest` on the messages it makes eligible again: the
// age limit no longer applies to them.
inline constexpr const char* reingested_keyword = "$MailroomReingested";

}  // namespace mailroom::mailbox
