// The operator subcommands on the command line (`mailroom <command> -c FILE
// ...`): CLI11 definitions, help texts with examples, dispatch to src/ops.
#pragma once

#include "config/model.hpp"
#include "ops/ops.hpp"

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace mailroom::cli {

class ops_commands {
 public:
  // Adds the subcommands to `app`; `-c` stays an option of `app` and may be
  // given before or after the command.
  explicit ops_commands(CLI::App& app);

  // True when the command line named a subcommand.
  bool selected() const;
  // Runs it; returns the exit code.
  int run(const config::config& cfg);

 private:
  struct command {
    CLI::App* app;
    int (*run)(const config::config&, const ops::invocation&);
  };
  ops::invocation inv_;
  std::vector<command> commands_;
};

}  // namespace mailroom::cli
