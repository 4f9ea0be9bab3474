// mailroom: watch IMAP mailboxes and hand every new message to Sidekiq or a
// webhook; a drop-in replacement for mail_room (`mailroom -c mail_room.yml`).
#include "app/coordinator.hpp"
#include "cli/ops_cli.hpp"
#include "common/logger.hpp"
#include "config/load.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>

#ifndef MAILROOM_VERSION
#define MAILROOM_VERSION "0.1.0"
#endif

namespace {

// mail_room's CrashHandler line (--log-exit-as json): keys in this order.
void print_exit_json(const std::string& message) {
  nlohmann::ordered_json j;
  j["time"] = mailroom::log::iso8601_now();
  j["severity"] = "fatal";
  j["message"] = message;
  j["backtrace"] = nlohmann::json::array();
  std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mailroom " MAILROOM_VERSION
               ": watch IMAP mailboxes and deliver new mail to Sidekiq or a webhook.\n"
               "Reads mail_room's YAML configuration unchanged.",
               "mailroom"};
  app.set_help_flag("-h,--help,-?", "Print this help and exit");
  std::string config_path;
  bool quiet = false;
  std::string exit_format;
  app.add_option("-c,--config", config_path, "mail_room YAML (+ERB) configuration file")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_flag("-q,--quiet", quiet, "Do not print configuration warnings");
  app.add_option("--log-exit-as", exit_format,
                 "On a fatal exit print one JSON line to stdout (FORMAT: json, none)")
      ->expected(0, 1)
      ->check(CLI::IsMember({"json", "none", ""}));
  app.set_version_flag("--version", "mailroom " MAILROOM_VERSION);
  // Operator subcommands (docs/operations.md); without one, run the service.
  mailroom::cli::ops_commands ops(app);
  app.footer(
      "Examples:\n"
      "  mailroom -c /etc/gitlab/mail_room.yml\n"
      "  mailroom -c mail_room.yml --log-exit-as json\n"
      "  mailroom status -c mail_room.yml       (operator commands: mailroom <command> --help)\n"
      "Signals: SIGTERM/SIGINT finish in-flight deliveries, LOGOUT, exit 0.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  const bool json_exit = app.count("--log-exit-as") > 0 && exit_format != "none";

  auto fatal = [&](const std::string& message) {
    std::cerr << "mailroom: " << message << std::endl;
    if (json_exit) print_exit_json(message);
  };

  auto loaded = mailroom::config::load_file(config_path);
  std::size_t errors = 0;
  for (const auto& d : loaded.diagnostics) {
    const bool is_error = d.lvl == mailroom::config::diagnostic::level::error;
    errors += is_error;
    if (is_error || !quiet) std::cerr << d.to_string() << "\n";
  }
  if (!loaded.ok() || !loaded.cfg) {
    fatal("invalid configuration " + config_path + " (" + std::to_string(errors) + " error" +
          (errors == 1 ? "" : "s") + ")");
    return 1;
  }

  if (ops.selected()) {
    std::signal(SIGPIPE, SIG_IGN);
    try {
      return ops.run(*loaded.cfg);
    } catch (const std::exception& e) {
      std::cerr << "mailroom: internal error: " << e.what() << std::endl;
      return 1;
    }
  }

  std::signal(SIGPIPE, SIG_IGN);  // a peer closing mid-write is an error code, not a crash
  mailroom::app::run_options opts;
  opts.on_fatal = fatal;
  try {
    return mailroom::app::run_service(*loaded.cfg, opts);
  } catch (const std::exception& e) {
    fatal(std::string("internal error: ") + e.what());
    return 1;
  }
}
