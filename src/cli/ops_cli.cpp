#include "cli/ops_cli.hpp"

#include <unistd.h>

#include <iostream>

namespace mailroom::cli {

namespace {

void add_mailbox(CLI::App* sub, ops::invocation& inv) {
  sub->add_option("--mailbox", inv.mailbox,
                  "Mailbox: email/folder, or an email or folder unique in the config "
                  "(optional with one mailbox)");
}

void add_filters(CLI::App* sub, ops::invocation& inv) {
  auto& f = inv.filter;
  const char* group = "Filters (all given must match)";
  sub->add_option("--older-than", f.older_than, "Date older than AGE (90s, 15m, 6h, 2d, 1w, 1d12h)")
      ->group(group);
  sub->add_option("--newer-than", f.newer_than, "Date newer than AGE")->group(group);
  sub->add_option("--from", f.from, "From matches REGEX (ECMAScript, case-insensitive)")
      ->group(group);
  sub->add_option("--to", f.to, "To or Cc matches REGEX")->group(group);
  sub->add_option("--subject", f.subject, "Subject (decoded) matches REGEX")->group(group);
  sub->add_option("--uid", f.uid, "UIDs: 1,5,10:20 or 100:*")->group(group);
}

constexpr const char* filter_notes =
    "Dates: the Date header (RFC 5322), or the arrival time when it is missing.\n"
    "Exit codes: 0 ok, 1 failure (named with the mailbox and the cause), 2 usage error.\n";

}  // namespace

ops_commands::ops_commands(CLI::App& app) {
  inv_.out = &std::cout;
  inv_.err = &std::cerr;
  inv_.in = &std::cin;
  inv_.echo_answers = isatty(STDIN_FILENO) == 0;
  app.fallthrough();  // `mailroom status -c FILE`: -c belongs to the main app
  app.require_subcommand(0, 1);

  auto* check = app.add_subcommand(
      "check", "Validate the config and try every mailbox and target (changes nothing)");
  add_mailbox(check, inv_);
  check->footer(
      "For each mailbox: connect, log in, EXAMINE the folder; PING the Sidekiq Redis or\n"
      "send OPTIONS to the webhook (no message is posted); decode the JWT secret; PING the\n"
      "arbitration Redis. One line per check; exit 0 only when all pass.\n\n"
      "Example:\n  mailroom check -c /etc/mailroom/mail_room.yml\n");
  commands_.push_back({check, &ops::run_check});

  auto* status = app.add_subcommand("status", "Per-mailbox counts, backlog age, queue and keys");
  add_mailbox(status, inv_);
  status->add_flag("--json", inv_.json, "JSON for scripts");
  status->add_flag("--cluster", inv_.cluster,
                   "The cluster's live instances and the mailboxes each watches (:cluster:)");
  status->footer(
      "Shows: reachable or the error, UIDVALIDITY, total / unseen / \\Deleted-not-expunged\n"
      "messages, age of the oldest unseen message, Sidekiq queue length (or webhook\n"
      "reachability) and the arbitration keys held; with a cluster section, the instance\n"
      "that watches the mailbox and since when. --cluster: the live instances and the\n"
      "mailboxes each watches, from the cluster's Redis only. Read-only.\n\n"
      "Examples:\n  mailroom status -c mail_room.yml\n"
      "  mailroom status -c mail_room.yml --mailbox incoming@example.com --json\n"
      "  mailroom status -c mail_room.yml --cluster\n");
  commands_.push_back({status, &ops::run_status});

  auto* unseen = app.add_subcommand("unseen", "List unseen messages (changes nothing)");
  add_mailbox(unseen, inv_);
  add_filters(unseen, inv_);
  unseen->add_flag("--json", inv_.json, "JSON array for scripts");
  unseen->footer(std::string("Headers are fetched with BODY.PEEK[HEADER.FIELDS (...)] from an "
                             "EXAMINEd folder: no flag changes.\n") +
                 filter_notes +
                 "\nExamples:\n  mailroom unseen -c mail_room.yml\n"
                 "  mailroom unseen -c mail_room.yml --older-than 2d --from 'noreply@'\n"
                 "  mailroom unseen -c mail_room.yml --json | jq '.[].uid'\n");
  commands_.push_back({unseen, &ops::run_unseen});

  auto* peek = app.add_subcommand("peek", "Show a message's header (or whole message) unread");
  add_mailbox(peek, inv_);
  peek->add_option("UID", inv_.uid, "The message's UID (see `unseen`)")->required();
  peek->add_flag("--body", inv_.body, "The whole message, not only the header");
  peek->add_flag("--json", inv_.json, "Decoded fields plus the raw text as JSON");
  peek->footer(
      "Fetched with BODY.PEEK from an EXAMINEd folder: \\Seen is not set.\n\n"
      "Examples:\n  mailroom peek -c mail_room.yml 4711\n"
      "  mailroom peek -c mail_room.yml 4711 --body | less\n");
  commands_.push_back({peek, &ops::run_peek});

  auto* mark = app.add_subcommand("mark-seen", "Flag chosen unseen messages \\Seen (ignore them)");
  add_mailbox(mark, inv_);
  add_filters(mark, inv_);
  mark->add_flag("--all", inv_.all, "Every unseen message");
  mark->add_flag("--dry-run", inv_.dry_run, "List what would change; change nothing");
  mark->add_flag("--interactive", inv_.interactive,
                 "Ask y/N/q per message, showing date, from, to, subject");
  mark->add_flag("--json", inv_.json, "With --dry-run: JSON");
  mark->footer(std::string("Needs a filter, --uid or --all. The messages stay in the folder; "
                           "`reingest --unseen` undoes it.\n") +
               filter_notes +
               "\nExamples:\n  mailroom mark-seen -c mail_room.yml --older-than 2d --dry-run\n"
               "  mailroom mark-seen -c mail_room.yml --older-than 2d\n"
               "  mailroom mark-seen -c mail_room.yml --interactive\n"
               "  mailroom mark-seen -c mail_room.yml --uid 17,20:25\n");
  commands_.push_back({mark, &ops::run_mark_seen});

  auto* expunge = app.add_subcommand("expunge", "Remove the messages flagged \\Deleted");
  add_mailbox(expunge, inv_);
  add_filters(expunge, inv_);
  expunge->add_flag("--all", inv_.all, "Every \\Deleted message");
  expunge->add_flag("--dry-run", inv_.dry_run, "Count and list; expunge nothing");
  expunge->add_flag("--json", inv_.json, "With --dry-run: JSON");
  expunge->footer(std::string("Uses UID EXPUNGE (RFC 4315) when the server has UIDPLUS, so "
                              "only the chosen messages go;\nwithout UIDPLUS only --all works. "
                              "Prints the count and the time taken.\n") +
                  filter_notes +
                  "\nExamples:\n  mailroom expunge -c mail_room.yml --dry-run --all\n"
                  "  mailroom expunge -c mail_room.yml --all\n");
  commands_.push_back({expunge, &ops::run_expunge});

  auto* reingest = app.add_subcommand(
      "reingest", "Make chosen messages eligible for delivery again (service may keep running)");
  add_mailbox(reingest, inv_);
  add_filters(reingest, inv_);
  reingest->add_flag("--all", inv_.all, "Every message in the folder (not \\Deleted)");
  reingest->add_flag("--unseen", inv_.unseen,
                     "Also clear \\Seen (e.g. messages marked seen by mark-seen)");
  reingest->add_flag("--force", inv_.force,
                     "Also delete in-flight claims of unseen messages (see below)");
  reingest->add_flag("--dry-run", inv_.dry_run, "Show each message's key and what would happen");
  reingest->add_flag("--json", inv_.json, "With --dry-run: JSON");
  reingest->footer(
      std::string(
          "Deletes the messages' arbitration keys in Redis and, with --unseen, clears \\Seen.\n"
          "Replaces the runbook's \"stop every instance for 10 minutes\".\n\n"
          "Safe while instances run, because:\n"
          "  - instances deliver only messages they find unseen, and only after winning\n"
          "    SET key NX: one instance wins each message;\n"
          "  - a key is deleted only if it still holds the value just read (one atomic\n"
          "    compare-and-delete script), so a claim taken meanwhile is never removed;\n"
          "  - the claim an instance holds on an UNSEEN message (\"claimed:<instance>\" or\n"
          "    mail_room's \"1\") is kept, as that instance may be delivering it now;\n"
          "    --force deletes it anyway (only when that instance is known to be dead);\n"
          "  - --unseen clears \\Seen only after the keys are gone: instances see the\n"
          "    message when nothing blocks it, and the first SET NX wins: delivered once.\n") +
      filter_notes +
      "\nExamples:\n  mailroom reingest -c mail_room.yml --uid 4711 --unseen --dry-run\n"
      "  mailroom reingest -c mail_room.yml --newer-than 1d --to 'incoming\\+group' --unseen\n"
      "  mailroom reingest -c mail_room.yml --all\n");
  commands_.push_back({reingest, &ops::run_reingest});
}

bool ops_commands::selected() const {
  for (const auto& c : commands_) {
    if (c.app->parsed()) return true;
  }
  return false;
}

int ops_commands::run(const config::config& cfg) {
  for (const auto& c : commands_) {
    if (c.app->parsed()) return c.run(cfg, inv_);
  }
  return ops::exit_usage;
}

}  // namespace mailroom::cli
