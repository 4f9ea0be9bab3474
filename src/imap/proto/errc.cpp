#include "imap/proto/errc.hpp"

#include <string>

namespace mailroom::imap {
namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "mailroom.imap"; }

  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::malformed_response:
        return "malformed IMAP response";
      case errc::line_too_long:
        return "IMAP response line exceeds max_line_length";
      case errc::literal_too_large:
        return "IMAP literal exceeds max_literal_size";
      case errc::nesting_too_deep:
        return "IMAP list nesting exceeds max_depth";
      case errc::too_many_items:
        return "IMAP response has more values than max_items";
      case errc::unexpected_tag:
        return "tagged IMAP response for a command not in flight";
      case errc::unexpected_continuation:
        return "IMAP continuation request where none was expected";
    }
    return "unknown IMAP protocol error";
  }
};

}  // namespace

const boost::system::error_category& imap_category() noexcept {
  static const category instance;
  return instance;
}

}  // namespace mailroom::imap
