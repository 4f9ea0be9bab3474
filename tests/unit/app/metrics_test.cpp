// The /metrics page follows the text exposition format: what strict scrapers
// (promtool check metrics) check of HELP and TYPE lines, without a socket;
// and every metric's name, type and labels are pinned in metrics.golden, so
// that a dashboard or an alert rule never loses its series unnoticed.
#include "app/health_routes.hpp"
#include "common/unix_time.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace mailroom::app {
namespace {

// A watcher whose state the test sets: no connection, no event loop.
class fake_watcher final : public mailbox::watcher {
 public:
  explicit fake_watcher(const config::mailbox& mb) : watcher(mb) {}
  boost::asio::awaitable<void> run(std::function<void(const mailbox::fatal_error&)>) override {
    co_return;
  }
  void stop() override {}
  void abort() override {}
  void restart() override {}
  token_counts tokens() const override { return tokens_; }

  mailbox::watcher_health& health_state() { return health_; }
  token_counts tokens_;
};

config::mailbox mailbox_config(const std::string& email) {
  config::mailbox mb;
  mb.email = email;
  mb.name = "inbox";
  mb.host = "127.0.0.1";
  mb.port = 993;
  return mb;
}

// name -> "type label,label" (histogram series folded into their family,
// without `le`), from a rendered page.
std::map<std::string, std::string> families(const std::string& page) {
  std::map<std::string, std::string> types;
  std::map<std::string, std::set<std::string>> labels;
  std::istringstream in(page);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream f(line.substr(7));
      std::string name, type;
      f >> name >> type;
      types[name] = type;
      labels[name];
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    const auto brace = line.find('{');
    const auto space = line.find(' ');
    std::string name = line.substr(0, std::min(brace, space));
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string s = suffix;
      if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0 &&
          types.count(name.substr(0, name.size() - s.size())) &&
          types[name.substr(0, name.size() - s.size())] == "histogram") {
        name = name.substr(0, name.size() - s.size());
        break;
      }
    }
    EXPECT_TRUE(types.count(name)) << "a sample before its TYPE line: " << line;
    if (brace != std::string::npos && brace < space) {
      const auto close = line.find('}', brace);
      std::istringstream ls(line.substr(brace + 1, close - brace - 1));
      std::string pair;
      while (std::getline(ls, pair, ',')) {
        const std::string label = pair.substr(0, pair.find('='));
        if (label != "le") labels[name].insert(label);
      }
    }
  }
  std::map<std::string, std::string> out;
  for (const auto& [name, type] : types) {
    std::string l;
    for (const auto& x : labels[name]) l += (l.empty() ? "" : ",") + x;
    out[name] = type + " " + (l.empty() ? "-" : l);
  }
  return out;
}

TEST(Metrics, NamesTypesAndLabelsMatchTheGoldenFile) {
  const auto mb = mailbox_config("incoming@example.com");
  std::vector<std::unique_ptr<mailbox::watcher>> watchers;
  watchers.push_back(std::make_unique<fake_watcher>(mb));
  std::string rendered;
  for (const auto& [name, what] : families(render_metrics(watchers)))
    rendered += name + " " + what + "\n";

  std::ifstream golden_file(METRICS_GOLDEN);
  ASSERT_TRUE(golden_file) << "cannot read " << METRICS_GOLDEN;
  std::string golden, line;
  while (std::getline(golden_file, line))
    if (!line.empty() && line[0] != '#') golden += line + "\n";
  EXPECT_EQ(rendered, golden)
      << "/metrics changed its names, types or labels. If that is intended (and the alert rules "
         "in deploy/prometheus and the dashboard in deploy/grafana follow), replace the lines of "
      << METRICS_GOLDEN << " with:\n"
      << rendered;
}

TEST(Metrics, HelpTextsUseOnlyValidEscapes) {
  const auto mb = mailbox_config("a@example.com");
  std::vector<std::unique_ptr<mailbox::watcher>> watchers;
  watchers.push_back(std::make_unique<fake_watcher>(mb));
  const std::string page = render_metrics(watchers);
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
      EXPECT_TRUE(type == "counter" || type == "gauge" || type == "histogram") << line;
      EXPECT_TRUE(names.insert(name).second) << "declared twice: " << name;
      if (type == "counter") {
        EXPECT_EQ(name.substr(name.size() - 6), "_total") << line;
      }
    }
  }
  EXPECT_EQ(help, static_cast<int>(names.size()));
  // The text about leftovers names the \Deleted flag, escaped.
  EXPECT_NE(page.find("flagged \\\\Deleted by an earlier session"), std::string::npos);
}

TEST(Metrics, HistogramsAreCumulativeWithSumAndCount) {
  const auto mb = mailbox_config("h@example.com");
  auto w = std::make_unique<fake_watcher>(mb);
  auto& h = w->health_state().target_response;
  h.observe(0.003);  // <= 0.005
  h.observe(0.2);    // <= 0.25
  h.observe(0.25);   // <= 0.25: a bound is inclusive (le)
  h.observe(60);     // only +Inf
  std::vector<std::unique_ptr<mailbox::watcher>> watchers;
  watchers.push_back(std::move(w));
  const std::string page = render_metrics(watchers);
  const std::string series =
      "mailroom_target_response_seconds_bucket{mailbox=\"" + mb.label() + "\",le=\"";
  EXPECT_NE(page.find(series + "0.005\"} 1\n"), std::string::npos) << page;
  EXPECT_NE(page.find(series + "0.1\"} 1\n"), std::string::npos) << page;
  EXPECT_NE(page.find(series + "0.25\"} 3\n"), std::string::npos) << page;
  EXPECT_NE(page.find(series + "10\"} 3\n"), std::string::npos) << page;
  EXPECT_NE(page.find(series + "+Inf\"} 4\n"), std::string::npos) << page;
  EXPECT_NE(page.find("mailroom_target_response_seconds_count{mailbox=\"" + mb.label() + "\"} 4\n"),
            std::string::npos);
  EXPECT_NE(
      page.find("mailroom_target_response_seconds_sum{mailbox=\"" + mb.label() + "\"} 60.453\n"),
      std::string::npos)
      << page;
}

std::string sample(const std::string& page, const std::string& name, const std::string& label) {
  const std::string head = name + "{mailbox=\"" + label + "\"} ";
  const auto at = page.find(head);
  if (at == std::string::npos) return "(missing)";
  const auto end = page.find('\n', at);
  return page.substr(at + head.size(), end - at - head.size());
}

TEST(Metrics, UnseenCountAgeAndOwnership) {
  const auto mb = mailbox_config("u@example.com");
  auto w = std::make_unique<fake_watcher>(mb);
  auto* fw = w.get();
  fw->health_state().unseen = {7, unix_seconds() - 3600, unix_seconds()};
  fw->health_state().certificate_expiry = 1893456000;  // 2030-01-01
  fw->tokens_ = {3, 1};
  std::vector<std::unique_ptr<mailbox::watcher>> watchers;
  watchers.push_back(std::move(w));

  std::string page = render_metrics(watchers);
  EXPECT_EQ(sample(page, "mailroom_mailbox_unseen_messages", mb.label()), "7");
  const double age =
      std::stod(sample(page, "mailroom_mailbox_oldest_unseen_age_seconds", mb.label()));
  EXPECT_GE(age, 3600);
  EXPECT_LT(age, 3600 + 300);  // rendered now, not at some other time
  EXPECT_EQ(sample(page, "mailroom_tls_certificate_expiry_timestamp_seconds", mb.label()),
            "1893456000");
  EXPECT_NE(
      page.find("mailroom_token_renewals_total{mailbox=\"" + mb.label() + "\",result=\"ok\"} 3\n"),
      std::string::npos);
  EXPECT_NE(page.find("mailroom_token_renewals_total{mailbox=\"" + mb.label() +
                      "\",result=\"failed\"} 1\n"),
            std::string::npos);
  EXPECT_NE(page.find("mailroom_build_info{version=\"" MAILROOM_VERSION "\"} 1\n"),
            std::string::npos);

  // Another instance took the mailbox (cluster mode): it counts from now
  // on, and a stale count here must not hold up max(unseen).
  fw->set_active(false);
  page = render_metrics(watchers);
  EXPECT_EQ(sample(page, "mailroom_mailbox_unseen_messages", mb.label()), "0");
  EXPECT_EQ(sample(page, "mailroom_mailbox_oldest_unseen_age_seconds", mb.label()), "0");
  EXPECT_EQ(sample(page, "mailroom_mailbox_owned", mb.label()), "0");
}

TEST(Metrics, NoUnseenMeansAgeZero) {
  const auto mb = mailbox_config("z@example.com");
  auto w = std::make_unique<fake_watcher>(mb);
  w->health_state().unseen = {0, unix_seconds() - 50, unix_seconds()};
  std::vector<std::unique_ptr<mailbox::watcher>> watchers;
  watchers.push_back(std::move(w));
  const std::string page = render_metrics(watchers);
  EXPECT_EQ(sample(page, "mailroom_mailbox_oldest_unseen_age_seconds", mb.label()), "0");
}

}  // namespace
}  // namespace mailroom::app
