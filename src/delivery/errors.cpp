#include "delivery/errc_core.hpp"

#include <string>

namespace mailroom::delivery {

namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "mailroom.delivery"; }
  std::string message(int ev) const override {
    switch (ev) {
      case core_errc::target_unavailable:
        return "delivery target unavailable";
      case core_errc::timed_out:
        return "delivery timed out";
      case core_errc::rejected:
        return "delivery rejected by the target";
      case core_errc::bad_message:
        return "message cannot be encoded for the delivery target";
      case core_errc::misconfigured:
        return "delivery misconfigured";
    }
    return "unknown delivery error";
  }
};

}  // namespace

const boost::system::error_category& delivery_category() {
  static const category instance;
  return instance;
}

}  // namespace mailroom::delivery
