#include "imap/proto/session.hpp"

#include "imap/proto/errc.hpp"

#include <gtest/gtest.h>

namespace mailroom::imap {
namespace {

using kind = session::event::kind;

// Drains events; fails the test on an error.
std::vector<session::event> events(session& s) {
  std::vector<session::event> out;
  for (;;) {
    auto e = s.next_event();
    EXPECT_TRUE(e.has_value()) << (e ? "" : e.error().message());
    if (!e || !*e) return out;
    out.push_back(std::move(**e));
  }
}

command_builder login(std::string_view user, std::string_view pass) {
  command_builder b("LOGIN");
  b.astring(user).astring(pass);
  return b;
}

TEST(session, tags_are_sequential_and_output_is_queued) {
  session s;
  EXPECT_EQ(s.submit(command_builder("CAPABILITY")), "A0001");
  EXPECT_EQ(s.submit(login("git", "pw")), "A0002");
  EXPECT_EQ(s.take_output(), "A0001 CAPABILITY\r\nA0002 LOGIN git pw\r\n");
  EXPECT_EQ(s.take_output(), "");
  EXPECT_EQ(s.pending_count(), 2u);
  EXPECT_TRUE(s.has_pending("A0001"));

  s.receive(
      "* CAPABILITY IMAP4rev1 IDLE\r\nA0001 OK done\r\nA0002 OK [CAPABILITY IMAP4rev1] in\r\n");
  const auto es = events(s);
  ASSERT_EQ(es.size(), 3u);
  EXPECT_EQ(es[0].k, kind::untagged);
  EXPECT_EQ(es[0].resp.keyword, "CAPABILITY");
  EXPECT_EQ(es[1].k, kind::tagged);
  EXPECT_EQ(es[1].resp.tag, "A0001");
  EXPECT_EQ(es[2].resp.tag, "A0002");
  EXPECT_EQ(s.pending_count(), 0u);
  EXPECT_FALSE(s.has_pending("A0001"));
}

// AUTHENTICATE without SASL-IR (RFC 3501 §6.2.2): the "+" is reported, and
// the SASL response goes out as its own line; an error challenge is answered
// the same way, then the tagged NO ends the command.
TEST(session, authenticate_answers_continuations_with_sasl_responses) {
  session s;
  command_builder auth("AUTHENTICATE");
  auth.atom("XOAUTH2");
  EXPECT_EQ(s.submit(auth), "A0001");
  EXPECT_EQ(s.take_output(), "A0001 AUTHENTICATE XOAUTH2\r\n");
  s.receive("+ \r\n");
  auto es = events(s);
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].k, kind::continuation);
  s.submit_continuation_response("dXNlcj1...");
  EXPECT_EQ(s.take_output(), "dXNlcj1...\r\n");
  s.receive("+ eyJzdGF0dXMiOiI0MDEifQ==\r\n");
  es = events(s);
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].resp.text, "eyJzdGF0dXMiOiI0MDEifQ==");
  s.submit_continuation_response("");
  EXPECT_EQ(s.take_output(), "\r\n");
  s.receive("A0001 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n");
  es = events(s);
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].k, kind::tagged);
  EXPECT_FALSE(s.has_pending("A0001"));
}

TEST(session, tag_prefix_and_width) {
  session s;
  s.set_tag_prefix("mr");
  for (int i = 1; i < 10000; ++i) s.submit(command_builder("NOOP"));
  EXPECT_EQ(s.submit(command_builder("NOOP")), "mr10000");
  EXPECT_EQ(s.take_output().substr(0, 13), "mr0001 NOOP\r\n");
}

TEST(session, synchronizing_literal_waits_for_continuation) {
  session s;
  const auto tag = s.submit(login("user", "pässword"));
  s.submit(command_builder("SELECT").mailbox("INBOX"));
  EXPECT_EQ(s.take_output(), "A0001 LOGIN user {9}\r\n");
  EXPECT_EQ(s.take_output(), "");  // held, and so is the SELECT behind it

  s.receive("* OK [ALERT] unrelated\r\n+ Ready for literal data\r\n");
  const auto es = events(s);
  ASSERT_EQ(es.size(), 1u);  // the "+" was consumed
  EXPECT_EQ(es[0].k, kind::untagged);
  EXPECT_EQ(s.take_output(), "pässword\r\nA0002 SELECT INBOX\r\n");

  s.receive(tag + " OK Logged in\r\nA0002 OK [READ-WRITE] done\r\n");
  EXPECT_EQ(events(s).size(), 2u);
  EXPECT_EQ(s.pending_count(), 0u);
}

TEST(session, each_literal_needs_its_own_continuation) {
  session s;
  s.submit(login("üser", "pä"));
  EXPECT_EQ(s.take_output(), "A0001 LOGIN {5}\r\n");
  s.receive("+ go\r\n");
  EXPECT_TRUE(events(s).empty());
  EXPECT_EQ(s.take_output(), "üser {3}\r\n");
  EXPECT_EQ(s.take_output(), "");
  s.receive("+ go\r\n");
  EXPECT_TRUE(events(s).empty());
  EXPECT_EQ(s.take_output(), "pä\r\n");
}

TEST(session, literal_plus_sends_everything_at_once) {
  session s;
  s.set_literal_plus(true);
  s.submit(login("üser", "pä"));
  EXPECT_EQ(s.take_output(), "A0001 LOGIN {5+}\r\nüser {3+}\r\npä\r\n");
  // No literal waits, so a "+" now is reported, not swallowed.
  s.receive("+ what\r\n");
  const auto es = events(s);
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].k, kind::continuation);
}

TEST(session, rejected_literal_drops_the_rest_of_the_command) {
  session s;
  s.submit(login("u", "pässword"));
  s.submit(command_builder("NOOP"));
  EXPECT_EQ(s.take_output(), "A0001 LOGIN u {9}\r\n");
  s.receive("A0001 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n");
  const auto es = events(s);
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].resp.st, status::no);
  EXPECT_EQ(s.take_output(), "A0002 NOOP\r\n");
}

TEST(session, idle_flow) {
  session s;
  const auto tag = s.submit(command_builder("IDLE"));
  EXPECT_EQ(s.take_output(), "A0001 IDLE\r\n");
  EXPECT_FALSE(s.idling());

  s.receive("+ idling\r\n* 4 EXISTS\r\n");
  auto es = events(s);
  ASSERT_EQ(es.size(), 2u);
  EXPECT_EQ(es[0].k, kind::continuation);
  EXPECT_EQ(es[0].resp.text, "idling");
  EXPECT_TRUE(s.idling());
  EXPECT_EQ(es[1].resp.keyword, "EXISTS");
  EXPECT_EQ(es[1].resp.number, 4u);

  s.submit_idle_done();
  s.submit_idle_done();  // no second DONE
  EXPECT_EQ(s.take_output(), "DONE\r\n");
  s.receive(tag + " OK Idle completed (0.001 + 10.000 + 10.000 secs).\r\n");
  es = events(s);
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].k, kind::tagged);
  EXPECT_FALSE(s.idling());
  EXPECT_EQ(s.pending_count(), 0u);

  s.submit_idle_done();  // no IDLE in flight: nothing
  EXPECT_EQ(s.take_output(), "");
}

TEST(session, done_waits_for_the_idle_continuation) {
  session s;
  s.submit(command_builder("IDLE"));
  s.submit_idle_done();
  EXPECT_EQ(s.take_output(), "A0001 IDLE\r\n");
  s.receive("* 2 EXPUNGE\r\n");
  EXPECT_EQ(events(s).size(), 1u);
  EXPECT_EQ(s.take_output(), "");
  s.receive("+ idling\r\n");
  EXPECT_EQ(events(s).size(), 1u);
  EXPECT_EQ(s.take_output(), "DONE\r\n");
}

TEST(session, commands_submitted_during_idle_wait_for_its_end) {
  session s;
  const auto idle = s.submit(command_builder("IDLE"));
  EXPECT_EQ(s.take_output(), "A0001 IDLE\r\n");
  s.receive("+ idling\r\n* 5 EXISTS\r\n");
  EXPECT_EQ(events(s).size(), 2u);

  s.submit(command_builder("UID SEARCH").atom("UNSEEN"));
  EXPECT_EQ(s.take_output(), "");  // must not be sent while idling
  s.submit_idle_done();
  EXPECT_EQ(s.take_output(), "DONE\r\n");
  s.receive(idle + " OK Idle completed\r\n");
  EXPECT_EQ(events(s).size(), 1u);
  EXPECT_EQ(s.take_output(), "A0002 UID SEARCH UNSEEN\r\n");
}

TEST(session, idle_rejected_needs_no_done) {
  session s;
  s.submit(command_builder("IDLE"));
  s.submit_idle_done();
  s.submit(command_builder("NOOP"));
  EXPECT_EQ(s.take_output(), "A0001 IDLE\r\n");
  s.receive("A0001 BAD Unknown command\r\n");
  EXPECT_EQ(events(s).size(), 1u);
  EXPECT_EQ(s.take_output(), "A0002 NOOP\r\n");
  EXPECT_FALSE(s.idling());
}

TEST(session, second_idle_queued_behind_the_first) {
  session s;
  s.submit(command_builder("IDLE"));
  s.submit(command_builder("IDLE"));
  EXPECT_EQ(s.take_output(), "A0001 IDLE\r\n");
  s.receive("+ idling\r\n");
  EXPECT_EQ(events(s).size(), 1u);
  s.submit_idle_done();
  EXPECT_EQ(s.take_output(), "DONE\r\n");
  s.receive("A0001 OK done\r\n");
  EXPECT_EQ(events(s).size(), 1u);
  EXPECT_EQ(s.take_output(), "A0002 IDLE\r\n");
  s.receive("+ idling\r\n");
  EXPECT_EQ(events(s).size(), 1u);
  EXPECT_TRUE(s.idling());
}

TEST(session, stray_continuation_is_reported) {
  session s;
  s.receive("+ hello\r\n");
  const auto es = events(s);
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].k, kind::continuation);
}

TEST(session, unexpected_tag_is_a_final_error) {
  session s;
  s.submit(command_builder("NOOP"));
  s.take_output();
  s.receive("A0001 OK\r\nA0001 OK again\r\n* 1 EXISTS\r\n");
  auto first = s.next_event();
  ASSERT_TRUE(first && *first);
  EXPECT_EQ(s.next_event().error(), errc::unexpected_tag);  // already completed
  EXPECT_EQ(s.next_event().error(), errc::unexpected_tag);

  session t;
  t.receive("X1 OK never sent\r\n");
  EXPECT_EQ(t.next_event().error(), errc::unexpected_tag);
}

TEST(session, parser_errors_and_limits_pass_through) {
  limits l;
  l.max_literal_size = 4;
  session s(l);
  s.receive("* 1 FETCH (BODY[] {5}\r\n");
  EXPECT_EQ(s.next_event().error(), errc::literal_too_large);
}

TEST(session, bye_is_an_untagged_event) {
  session s;
  s.receive("* BYE Server shutting down.\r\n");
  const auto es = events(s);
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].resp.st, status::bye);
}

}  // namespace
}  // namespace mailroom::imap
