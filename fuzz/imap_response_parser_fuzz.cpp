// libFuzzer target for the IMAP response parser, the decoders and the session.
// The input is raw server bytes (the corpus holds Dovecot transcripts). It is
// parsed whole and again in small pieces; the two must agree exactly, which
// checks the incremental framing as well as memory safety.
#include "imap/proto/decode.hpp"
#include "imap/proto/fetch_summary.hpp"
#include "imap/proto/response_parser.hpp"
#include "imap/proto/session.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

namespace {

using namespace mailroom::imap;

// Small limits so that inputs of a few KiB reach every limit.
limits fuzz_limits() {
  limits l;
  l.max_line_length = 2048;
  l.max_literal_size = 4096;
  l.max_response_literal_bytes = 6000;
  l.max_depth = 8;
  l.max_items = 500;
  return l;
}

void exercise_decoders(const response& r) {
  (void)decode_capabilities(r);
  (void)decode_uidvalidity(r);
  (void)decode_uidnext(r);
  if (r.keyword == "SEARCH") (void)decode_search(r);
  if (r.keyword == "FETCH") {
    (void)decode_fetch(response(r));
    // The operator commands' decoder (INTERNALDATE, RFC822.SIZE, header sections).
    auto summary = decode_message_summary(response(r));
    (void)summary;
  }
  if (!r.text.empty()) (void)parse_internal_date(r.text);
}

struct outcome {
  std::vector<response> responses;
  boost::system::error_code error;
};

outcome parse(std::string_view input, std::size_t piece) {
  outcome out;
  response_parser p(fuzz_limits());
  for (std::size_t at = 0; at < input.size() && !out.error; at += piece) {
    p.feed(input.substr(at, piece));
    for (;;) {
      auto r = p.next();
      if (!r) {
        out.error = r.error();
        break;
      }
      if (!*r) break;
      exercise_decoders(**r);
      out.responses.push_back(std::move(**r));
    }
  }
  return out;
}

void run_session(std::string_view input) {
  session s(fuzz_limits());
  s.submit(command_builder("LOGIN").astring("user").astring("p\xc3\xa4ss"));
  s.submit(command_builder("IDLE"));
  s.submit(command_builder("UID FETCH").atom("1:*").atom("(UID BODY.PEEK[])"));
  (void)s.take_output();
  s.receive(input);
  for (int i = 0; i < 10000; ++i) {
    auto e = s.next_event();
    if (!e || !*e) break;
    if ((*e)->k == session::event::kind::continuation) s.submit_idle_done();
    (void)s.take_output();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const outcome whole = parse(input, input.size() + 1);
  const outcome pieces = parse(input, 1 + size % 7);
  if (whole.error != pieces.error || whole.responses != pieces.responses) std::abort();
  run_session(input);
  return 0;
}
