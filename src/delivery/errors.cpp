#include "delivery/errc.hpp"

#include <string>

namespace mailroom::delivery {

namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "mailroom.delivery"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::target_unavailable:
        return "delivery target unavailable";
      case errc::timed_out:
        return "delivery timed out";
      case errc::rejected:
        return "delivery rejected by the target";
      case errc::misconfigured:
        return "delivery misconfigured";
      case errc::refused:
        return "message refused by the target for good";
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
