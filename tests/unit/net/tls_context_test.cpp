// make_client_tls_context(): one context per distinct TLS configuration,
// shared while connections hold it, rebuilt when the CA file changes on disk,
// and with OpenSSL's buffers released while a session is idle.
#include "net/stream.hpp"

#include "support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace mailroom::net {
namespace {

namespace fs = std::filesystem;

// A self-signed CA certificate, PEM, written to `path`.
void write_ca(const fs::path& path, const char* cn) {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  ASSERT_NE(key, nullptr);
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                             -1, -1, 0);
  X509_set_issuer_name(x, name);
  ASSERT_GT(X509_sign(x, key, EVP_sha256()), 0);
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  PEM_write_X509(f, x);
  std::fclose(f);
  X509_free(x);
  EVP_PKEY_free(key);
}

class TlsContext : public ::testing::Test {
 protected:
  mailroom::test::temp_dir tmp_{"mailroom-tls"};
  const fs::path dir_ = tmp_.path();
};

TEST_F(TlsContext, SameSettingsShareOneContext) {
  write_ca(dir_ / "ca.pem", "one");
  config::tls_options opts;
  opts.ca_file = (dir_ / "ca.pem").string();
  error_code ec;
  auto a = make_client_tls_context(opts, ec);
  ASSERT_TRUE(a) << ec.message();
  auto b = make_client_tls_context(opts, ec);
  EXPECT_EQ(a, b);
  EXPECT_TRUE(SSL_CTX_get_mode(a->native_handle()) & SSL_MODE_RELEASE_BUFFERS);
  EXPECT_TRUE(SSL_CTX_get_verify_mode(a->native_handle()) & SSL_VERIFY_PEER);

  config::tls_options no_verify;
  no_verify.verify_peer = false;
  auto c = make_client_tls_context(no_verify, ec);
  ASSERT_TRUE(c);
  EXPECT_NE(a, c);
  EXPECT_EQ(SSL_CTX_get_verify_mode(c->native_handle()), SSL_VERIFY_NONE);
  EXPECT_EQ(c, make_client_tls_context(no_verify, ec));
}

TEST_F(TlsContext, AReplacedCaFileGivesANewContext) {
  const fs::path ca = dir_ / "ca.pem";
  write_ca(ca, "old");
  config::tls_options opts;
  opts.ca_file = ca.string();
  error_code ec;
  auto before = make_client_tls_context(opts, ec);
  ASSERT_TRUE(before);
  // The rotation of a CA bundle: a new file renamed over the old one.
  write_ca(dir_ / "new.pem", "new");
  fs::rename(dir_ / "new.pem", ca);
  auto after = make_client_tls_context(opts, ec);
  ASSERT_TRUE(after);
  EXPECT_NE(before, after);
  EXPECT_EQ(after, make_client_tls_context(opts, ec));
}

TEST_F(TlsContext, AContextNobodyHoldsIsFreed) {
  write_ca(dir_ / "ca.pem", "one");
  config::tls_options opts;
  opts.ca_file = (dir_ / "ca.pem").string();
  error_code ec;
  std::weak_ptr<asio::ssl::context> weak = make_client_tls_context(opts, ec);
  EXPECT_TRUE(weak.expired());
}

TEST_F(TlsContext, AnUnreadableCaFileIsAnError) {
  config::tls_options opts;
  opts.ca_file = (dir_ / "missing.pem").string();
  error_code ec;
  EXPECT_FALSE(make_client_tls_context(opts, ec));
  EXPECT_TRUE(ec);
  // Not cached: once the file exists, it is loaded.
  write_ca(dir_ / "missing.pem", "late");
  ec = {};
  EXPECT_TRUE(make_client_tls_context(opts, ec)) << ec.message();
}

}  // namespace
}  // namespace mailroom::net
