// The /metrics page follows the text exposition format: what strict scrapers
// (promtool check metrics) check of HELP and TYPE lines, without a socket.
#include "app/health_routes.hpp"

#include <gtest/gtest.h>

#include <set>
#include <sstream>

namespace mailroom::app {
namespace {

TEST(Metrics, HelpTextsUseOnlyValidEscapes) {
  const std::string page = render_metrics({});
  std::istringstream in(page);
  std::string line;
  std::set<std::string> names;
  int help = 0;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0) {
      ++help;
      // In a HELP text a backslash starts \\ or \n, nothing else.
      for (std::size_t i = 0; i < line.size(); ++i) {
        if (line[i] != '\\') continue;
        ASSERT_LT(i + 1, line.size()) << line;
        EXPECT_TRUE(line[i + 1] == '\\' || line[i + 1] == 'n') << line;
        ++i;
      }
    } else if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream f(line.substr(7));
      std::string name, type;
      f >> name >> type;
      EXPECT_TRUE(type == "counter" || type == "gauge") << line;
      EXPECT_TRUE(names.insert(name).second) << "declared twice: " << name;
      if (type == "counter") {
        EXPECT_EQ(name.substr(name.size() - 6), "_total") << line;
      }
    } else {
      ADD_FAILURE() << "a sample without mailboxes: " << line;
    }
  }
  EXPECT_EQ(help, static_cast<int>(names.size()));
  EXPECT_GE(names.size(), 12u);
  // The text about leftovers names the \Deleted flag, escaped.
  EXPECT_NE(page.find("flagged \\\\Deleted by an earlier session"), std::string::npos);
}

}  // namespace
}  // namespace mailroom::app
