// The ERB subset: ENV[...], ENV.fetch(...), File.read(...) and the method chain.
#include "config/erb.hpp"

#include "config_test_util.hpp"

#include <gtest/gtest.h>

namespace mailroom::config {
namespace {

using test::env_of;
using test::temp_file;

erb_output render(const std::string& text, env_lookup env = env_of({}),
                  const std::string& base_dir = ".") {
  return render_erb(text, env, base_dir);
}

TEST(erb, text_without_tags_is_unchanged) {
  auto out = render("a: 1\nb: 2\n");
  EXPECT_EQ(out.text, "a: 1\nb: 2\n");
  EXPECT_TRUE(out.errors.empty());
  EXPECT_EQ(out.original_line(1), 2);
}

TEST(erb, env_index_with_either_quote) {
  auto out = render("a: <%= ENV['X'] %>\nb: <%= ENV[\"Y\"] %>\n", env_of({{"X", "1"}, {"Y", "2"}}));
  EXPECT_EQ(out.text, "a: 1\nb: 2\n");
  EXPECT_TRUE(out.errors.empty());
}

TEST(erb, unset_env_is_empty_like_nil_to_s) {
  auto out = render("a: '<%= ENV['UNSET'] %>'\n");
  EXPECT_EQ(out.text, "a: ''\n");
  EXPECT_TRUE(out.errors.empty());
}

TEST(erb, env_fetch_with_default_and_without) {
  auto out = render("a: <%= ENV.fetch('X', 'dflt') %>\nb: <%= ENV.fetch(\"Y\", 5) %>\n");
  EXPECT_EQ(out.text, "a: dflt\nb: 5\n");
  out = render("a: <%= ENV.fetch('X', 'dflt') %>\n", env_of({{"X", "set"}}));
  EXPECT_EQ(out.text, "a: set\n");

  out = render("a: 1\nb: <%= ENV.fetch('MISSING') %>\n");
  ASSERT_EQ(out.errors.size(), 1u);
  EXPECT_EQ(out.errors[0].line, 2);
  EXPECT_NE(out.errors[0].message.find("ENV.fetch(\"MISSING\")"), std::string::npos);
  EXPECT_NE(out.errors[0].message.find("MISSING is not set"), std::string::npos);
}

TEST(erb, file_read_strip_chomp_to_json) {
  temp_file f("  s3cr\"et\n");
  auto out = render("a: <%= File.read('" + f.path() + "').strip %>\n");
  EXPECT_EQ(out.text, "a: s3cr\"et\n");
  out = render("a: <%= File.read(\"" + f.path() + "\").chomp %>\n");
  EXPECT_EQ(out.text, "a:   s3cr\"et\n");
  // The Helm chart's form.
  out = render("a: <%= File.read(\"" + f.path() + "\").strip.to_json %>\n");
  EXPECT_EQ(out.text, "a: \"s3cr\\\"et\"\n");
  EXPECT_TRUE(out.errors.empty());
}

// Newer Helm charts: :password: "<%= File.read(...).strip.dump[1..-2] %>",
// a Ruby string literal without its quotes inside YAML double quotes.
TEST(erb, dump_and_range_index_as_the_helm_chart_writes_them) {
  temp_file f("  pa\"ss\\word #{x} é 😀\x01\n");
  auto out = render(":password: \"<%= File.read(\"" + f.path() + "\").strip.dump[1..-2] %>\"\n");
  ASSERT_TRUE(out.errors.empty()) << out.errors[0].message;
  EXPECT_EQ(out.text, ":password: \"pa\\\"ss\\\\word \\#{x} \\u00E9 \\u{1F600}\\x01\"\n");
}

TEST(erb, ruby_dump_matches_ruby) {
  EXPECT_EQ(ruby_dump(""), "\"\"");
  EXPECT_EQ(ruby_dump("plain ~!"), "\"plain ~!\"");
  EXPECT_EQ(ruby_dump("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(ruby_dump("\n\r\t\f\v\b\a\x1b"), "\"\\n\\r\\t\\f\\v\\b\\a\\e\"");
  // "#" only before what would interpolate.
  EXPECT_EQ(ruby_dump("#{a} #$b #@c #d"), "\"\\#{a} \\#$b \\#@c #d\"");
  EXPECT_EQ(ruby_dump(std::string("\0\x7f", 2)), "\"\\x00\\x7F\"");
  EXPECT_EQ(ruby_dump("\xc3\xa9"), "\"\\u00E9\"");
  EXPECT_EQ(ruby_dump("\xe2\x82\xac"), "\"\\u20AC\"");
  EXPECT_EQ(ruby_dump("\xf0\x9f\x98\x80"), "\"\\u{1F600}\"");
  // Bytes of an invalid sequence one by one.
  EXPECT_EQ(ruby_dump("\xc3("), "\"\\xC3(\"");
  EXPECT_EQ(ruby_dump("\xff"), "\"\\xFF\"");
}

TEST(erb, ruby_slice_matches_ruby) {
  EXPECT_EQ(ruby_slice("\"abc\"", 1, -2, false), "abc");
  EXPECT_EQ(ruby_slice("abc", 0, 0, false), "a");
  EXPECT_EQ(ruby_slice("abc", 0, 0, true), "");
  EXPECT_EQ(ruby_slice("abc", 1, 10, false), "bc");
  EXPECT_EQ(ruby_slice("abc", 3, 5, false), "");            // at the end: ""
  EXPECT_EQ(ruby_slice("abc", 4, 5, false), std::nullopt);  // beyond: nil
  EXPECT_EQ(ruby_slice("abc", -4, 1, false), std::nullopt);
  EXPECT_EQ(ruby_slice("\"\"", 1, -2, false), "");
  EXPECT_EQ(ruby_slice("x\xc3\xa9y", 1, 1, false), "\xc3\xa9");  // by character
}

TEST(erb, malformed_range_index_is_unsupported) {
  for (const char* expr :
       {"ENV['X'][1]", "ENV['X'][a..b]", "ENV['X'][1..", "ENV['X'][1..2", "ENV['X'][1234567..2]"}) {
    auto out = render(std::string("a: <%= ") + expr + " %>\n", env_of({{"X", "v"}}));
    EXPECT_EQ(out.errors.size(), 1u) << expr;
  }
}

TEST(erb, file_read_relative_to_base_dir) {
  temp_file f("value\n");
  auto out = render("a: <%= File.read('" + f.name() + "').chomp %>\n", env_of({}), f.dir());
  EXPECT_EQ(out.text, "a: value\n");
}

TEST(erb, file_read_failure_names_path_and_line) {
  auto out = render("a: 1\nb: <%= File.read('/nonexistent/mailroom/secret') %>\n");
  ASSERT_EQ(out.errors.size(), 1u);
  EXPECT_EQ(out.errors[0].line, 2);
  EXPECT_NE(out.errors[0].message.find("/nonexistent/mailroom/secret"), std::string::npos);
}

TEST(erb, to_json_of_env_and_nil) {
  auto out = render("a: <%= ENV['X'].to_json %>\nb: <%= ENV['NO'].to_json %>\n",
                    env_of({{"X", "p\"w\\\n\x01"}}));
  EXPECT_EQ(out.text, "a: \"p\\\"w\\\\\\n\\u0001\"\nb: null\n");
}

TEST(erb, to_i_and_to_s) {
  auto out = render("a: <%= ENV['N'].to_i %>\nb: <%= ENV['NO'].to_i %>\nc: <%= ENV['NO'].to_s %>\n",
                    env_of({{"N", " 1_000abc"}}));
  EXPECT_EQ(out.text, "a: 1000\nb: 0\nc: \n");
}

TEST(erb, strip_of_unset_env_is_an_error) {
  auto out = render("a: <%= ENV['NO'].strip %>\n");
  ASSERT_EQ(out.errors.size(), 1u);
  EXPECT_NE(out.errors[0].message.find("is not set, so .strip fails"), std::string::npos);
}

TEST(erb, comments_are_dropped_and_trim_keeps_line_numbers) {
  auto out = render("<%# a comment %>\na: 1\n<%= ENV['X'] -%>\nb: 2\n", env_of({{"X", "c: 3"}}));
  EXPECT_EQ(out.text, "\na: 1\nc: 3b: 2\n");
  EXPECT_TRUE(out.errors.empty());

  out = render("<%= ENV['X'] -%>\n\nb: 2\n", env_of({{"X", ""}}));
  // Output line 0 joins original lines 1 and 2; "b: 2" is still line 3.
  EXPECT_EQ(out.text, "\nb: 2\n");
  EXPECT_EQ(out.original_line(1), 3);
}

TEST(erb, inserted_newlines_keep_original_line_numbers) {
  temp_file f("x\ny\nz");
  auto out = render("a: |\n  <%= File.read('" + f.path() + "') %>\nb: 2\n");
  EXPECT_EQ(out.original_line(3), 2);  // "z" came from line 2
  EXPECT_EQ(out.original_line(4), 3);  // "b: 2"
  EXPECT_TRUE(out.line_has_insert(1));
  EXPECT_FALSE(out.line_has_insert(4));
}

TEST(erb, unsupported_expression_points_to_the_rendering_docs) {
  auto out = render("a: 1\nb: <%= Gitlab::MailRoom.enabled_configs %>\n<% if x %>\n");
  ASSERT_EQ(out.errors.size(), 2u);
  EXPECT_EQ(out.errors[0].line, 2);
  EXPECT_EQ(
      out.errors[0].message.rfind("unsupported ERB expression `Gitlab::MailRoom.enabled_configs`: "
                                  "mailroom evaluates only ENV[...], ENV.fetch(...) and "
                                  "File.read(...) with .strip/.chomp/.to_json/.dump",
                                  0),
      0u)
      << out.errors[0].message;
  EXPECT_NE(out.errors[0].message.find("Rendering GitLab's ERB config"), std::string::npos);
  EXPECT_EQ(out.errors[1].line, 3);
  EXPECT_NE(out.errors[1].message.find("`if x`"), std::string::npos);
}

TEST(erb, other_unsupported_forms) {
  for (const char* expr :
       {"ENV['X'].upcase", "ENV['X'] + 'a'", "File.read(path)", "ENV.fetch('X') { 'd' }",
        "\"#{ENV['X']}\"", "ENVX['A']", "ENV['X'].chomp('a')", "`id`"}) {
    auto out = render(std::string("a: <%= ") + expr + " %>\n");
    ASSERT_EQ(out.errors.size(), 1u) << expr;
    EXPECT_NE(out.errors[0].message.find("unsupported ERB expression"), std::string::npos) << expr;
  }
}

TEST(erb, url_encode_as_the_helm_chart_writes_redis_url) {
  temp_file pw("p@ss w+rd/~\n");
  auto out = render("u: redis://:<%= ERB::Util::url_encode(File.read(\"" + pw.path() +
                    "\").strip) %>@redis:6379\n");
  EXPECT_TRUE(out.errors.empty());
  EXPECT_EQ(out.text, "u: redis://:p%40ss%20w%2Brd%2F~@redis:6379\n");
  out = render("u: <%= ERB::Util.url_encode(ENV['NO']) %>|<%= URI.escape(ENV['P']) %>\n",
               env_of({{"P", "a b@c"}}));
  EXPECT_EQ(out.text, "u: |a%20b@c\n");
  out = render("u: <%= ERB::Util.url_encode(ENV.fetch('NO')) %>\n");
  ASSERT_EQ(out.errors.size(), 1u);
  EXPECT_NE(out.errors[0].message.find("ENV.fetch(\"NO\")"), std::string::npos);
}

TEST(erb, unterminated_tag) {
  auto out = render("a: 1\nb: <%= ENV['X']\n");
  ASSERT_EQ(out.errors.size(), 1u);
  EXPECT_EQ(out.errors[0].line, 2);
  EXPECT_NE(out.errors[0].message.find("unterminated"), std::string::npos);
}

TEST(erb, literal_percent_escape) {
  auto out = render("a: '<%% x'\n");
  EXPECT_EQ(out.text, "a: '<% x'\n");
}

TEST(erb, ruby_to_json_escapes_like_ruby) {
  EXPECT_EQ(ruby_to_json("a/b\tc\xc3\xa9"), "\"a/b\\tc\xc3\xa9\"");
}

}  // namespace
}  // namespace mailroom::config
