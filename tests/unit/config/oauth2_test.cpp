// auth_method and oauth2: the providers' defaults, and each mistake named by
// file:line, mailbox and key, never with a secret.
#include "config/load.hpp"

#include "config_test_util.hpp"

#include <gtest/gtest.h>

namespace mailroom::config {
namespace {

using test::load;

// Lines 1-4; the next line written by a test is line 5.
const std::string head =
    "mailboxes:\n"
    "  - email: incoming@example.com\n"
    "    name: inbox\n"
    "    delivery_method: noop\n";

TEST(oauth2, google_with_a_refresh_token) {
  auto r = load(head +
                "    auth_method: xoauth2\n"
                "    oauth2:\n"
                "      provider: google\n"
                "      client_id: 123.apps.googleusercontent.com\n"
                "      client_secret: gsecret-1\n"
                "      refresh_token: 1//grefresh-2\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_EQ(r.diagnostics.size(), 0u) << test::dump(r);
  const auto& mb = r.cfg->mailboxes[0];
  EXPECT_EQ(mb.auth, auth_method::xoauth2);
  EXPECT_TRUE(mb.password.empty());
  EXPECT_EQ(mb.oauth2.provider, "google");
  EXPECT_EQ(mb.oauth2.token_url, "https://oauth2.googleapis.com/token");
  EXPECT_EQ(mb.oauth2.scope, "https://mail.google.com/");
  EXPECT_EQ(mb.oauth2.client_id, "123.apps.googleusercontent.com");
  EXPECT_EQ(mb.oauth2.client_secret.reveal(), "gsecret-1");
  EXPECT_EQ(mb.oauth2.refresh_token.reveal(), "1//grefresh-2");
  EXPECT_FALSE(mb.oauth2.client_credentials());
}

TEST(oauth2, microsoft_delegated_and_app_only) {
  auto r = load(head +
                "    :auth_method: :oauthbearer\n"
                "    :oauth2:\n"
                "      :provider: :microsoft\n"
                "      :tenant_id: 0000-tenant\n"
                "      :client_id: app-1\n"
                "      :refresh_token: mrefresh\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  const auto& mb = r.cfg->mailboxes[0];
  EXPECT_EQ(mb.auth, auth_method::oauthbearer);
  EXPECT_EQ(mb.oauth2.token_url, "https://login.microsoftonline.com/0000-tenant/oauth2/v2.0/token");
  EXPECT_EQ(mb.oauth2.scope, "https://outlook.office365.com/IMAP.AccessAsUser.All offline_access")
      << "a public client with a refresh token needs no secret";

  r = load(head +
           "    auth_method: xoauth2\n"
           "    oauth2: {provider: microsoft, tenant_id: t, client_id: app, client_secret: s}\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_TRUE(r.cfg->mailboxes[0].oauth2.client_credentials());
  EXPECT_EQ(r.cfg->mailboxes[0].oauth2.scope, "https://outlook.office365.com/.default");
}

TEST(oauth2, own_token_endpoint) {
  auto r = load(head +
                "    auth_method: xoauth2\n"
                "    oauth2:\n"
                "      token_url: https://sso.example.com/token\n"
                "      client_id: c\n"
                "      client_secret: s\n"
                "      scope: imap\n");
  ASSERT_TRUE(r.ok()) << test::dump(r);
  EXPECT_EQ(r.cfg->mailboxes[0].oauth2.token_url, "https://sso.example.com/token");
  EXPECT_EQ(r.cfg->mailboxes[0].oauth2.scope, "imap");
  // http:// to this machine is fine (a local token service, the tests).
  r = load(
      head +
      "    auth_method: xoauth2\n"
      "    oauth2: {token_url: 'http://127.0.0.1:8080/token', client_id: c, client_secret: s}\n");
  EXPECT_TRUE(r.ok()) << test::dump(r);
}

TEST(oauth2, mistakes_name_the_key_and_line) {
  auto r = load(head +
                "    auth_method: xoauth2\n"                       // 5
                "    password: hunter2\n"                          // 6
                "    oauth2:\n"                                    // 7
                "      provider: yahoo\n"                          // 8
                "      client_secret: topsecret\n"                 // 9
                "      token_url: http://sso.example.com/token\n"  // 10
                "      colour: blue\n");                           // 11
  EXPECT_FALSE(r.ok());
  EXPECT_DIAG(r,
              "config.yml:6: mailbox incoming@example.com/inbox: password: must not be set "
              "together with auth_method xoauth2");
  EXPECT_DIAG(r,
              "config.yml:8: mailbox incoming@example.com/inbox: oauth2.provider: unknown "
              "provider `yahoo`");
  EXPECT_DIAG(r, "config.yml:7: mailbox incoming@example.com/inbox: oauth2.client_id: is required");
  EXPECT_DIAG(r,
              "config.yml:10: mailbox incoming@example.com/inbox: oauth2.token_url: http:// is "
              "accepted only for a loopback host (got host sso.example.com)");
  EXPECT_DIAG(
      r,
      "config.yml:11: warning: mailbox incoming@example.com/inbox: oauth2: unknown key `colour`");
  for (const auto& line : test::lines_of(r)) {
    EXPECT_EQ(line.find("hunter2"), std::string::npos) << line;
    EXPECT_EQ(line.find("topsecret"), std::string::npos) << line;
  }
}

TEST(oauth2, only_loopback_addresses_may_take_plain_http) {
  for (const char* host : {"127.0.0.1", "127.1.2.3", "localhost", "[::1]"}) {
    auto r = load(head + "    auth_method: xoauth2\n    oauth2: {token_url: 'http://" + host +
                  ":8080/token', client_id: c, client_secret: s}\n");
    EXPECT_TRUE(r.ok()) << host << "\n" << test::dump(r);
  }
  // Names that merely look local are anyone's to register.
  for (const char* host :
       {"127.attacker.example", "127.0.0.1.nip.io", "localhost.example", "evil.example"}) {
    auto r = load(head + "    auth_method: xoauth2\n    oauth2: {token_url: 'http://" + host +
                  "/token', client_id: c, client_secret: s}\n");
    EXPECT_FALSE(r.ok()) << host;
    EXPECT_DIAG(r, "oauth2.token_url: http:// is accepted only for a loopback host");
  }
}

TEST(oauth2, missing_pieces) {
  auto r = load(head + "    auth_method: xoauth2\n");
  EXPECT_DIAG(r,
              "config.yml:5: mailbox incoming@example.com/inbox: oauth2: is required with "
              "auth_method xoauth2");
  r = load(head + "    auth_method: xoauth2\n    oauth2: {provider: microsoft, client_id: c}\n");
  EXPECT_DIAG(r, "oauth2.tenant_id: is required with provider microsoft");
  EXPECT_DIAG(r, "oauth2.client_secret: is required without a refresh_token");
  r = load(head +
           "    auth_method: xoauth2\n    oauth2: {provider: google, client_id: c, "
           "client_secret: s}\n");
  EXPECT_DIAG(r, "oauth2.refresh_token: is required with provider google");
  r = load(head + "    auth_method: xoauth2\n    oauth2: {client_id: c, client_secret: s}\n");
  EXPECT_DIAG(r, "oauth2.token_url: is required without a provider");
  r = load(head + "    auth_method: kerberos\n");
  EXPECT_DIAG(r,
              "config.yml:5: mailbox incoming@example.com/inbox: auth_method: unknown value "
              "`kerberos`: expected login, xoauth2 or oauthbearer");
}

TEST(oauth2, oauth2_without_an_oauth2_auth_method_is_an_error) {
  auto r = load(head +
                "    password: pw\n"
                "    oauth2: {provider: google, client_id: c, refresh_token: r}\n");
  EXPECT_DIAG(r,
              "config.yml:6: mailbox incoming@example.com/inbox: oauth2: is set, but "
              "auth_method is login (the default)");
  // And login still needs its password.
  r = load(head);
  EXPECT_DIAG(r, "password: is required");
}

}  // namespace
}  // namespace mailroom::config
