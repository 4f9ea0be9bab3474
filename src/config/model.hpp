// The configuration model: plain structs with mail_room's defaults.
//
// Loading (load.cpp: ERB + YAML -> model), validation (validate.cpp) and wiring
// (app/coordinator.cpp) are separate steps. Every field carries mail_room's
// default (mail_room lib/mail_room/mailbox.rb DEFAULTS) unless marked "ours".
#pragma once

#include "common/secret.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mailroom::config {

// Where a value came from, for error messages: "config.yml:12".
struct source_location {
  std::string file;
  int line = 0;  // 1-based; 0 = unknown
};

// TLS settings shared by IMAP, Redis and HTTP clients.
// mail_room: `ssl: true|false|{verify_mode:, ca_file:, ca_path:}`.
struct tls_options {
  bool enabled = true;
  bool verify_peer = true;  // verify_mode: peer (default) | none
  std::string ca_file;      // empty: system trust store
  std::string ca_path;
};

struct sentinel_endpoint {
  std::string host;
  std::uint16_t port = 26379;
  std::string username;
  secret password;
};

// A Redis target as mail_room's redis-rb would build it from redis_url,
// redis_db, sentinels and sentinel credentials.
struct redis_target {
  std::string url = "redis://localhost:6379";  // as written, for display (password removed)
  std::string host = "localhost";              // with sentinels: the master name
  std::uint16_t port = 6379;
  bool tls = false;  // rediss://
  tls_options tls_settings;
  std::string username;          // ACL user from the URL
  secret password;               // from the URL
  int db = 0;                    // URL path, overridden by redis_db
  std::string namespace_prefix;  // `namespace`: keys become "<ns>:<key>"
  std::vector<sentinel_endpoint> sentinels;
  std::string sentinel_username;
  secret sentinel_password;

  bool uses_sentinel() const { return !sentinels.empty(); }
  // "<ns>:<key>" or "<key>".
  std::string key(const std::string& k) const {
    return namespace_prefix.empty() ? k : namespace_prefix + ":" + k;
  }
};

enum class delivery_method { postback, sidekiq, logger, noop, que, letter_opener };

struct sidekiq_options {
  redis_target redis;
  std::string queue = "default";
  std::string worker;  // job "class"; mail_room sends null when unset, we require it
};

struct postback_options {
  std::string url;
  secret token;  // Authorization: Token <token>
  std::string username;
  secret password;           // Basic auth with username
  std::string content_type;  // empty: application/x-www-form-urlencoded (Faraday's default)
  std::string jwt_auth_header;
  std::string jwt_secret_path;  // file holding base64 of the HMAC key
  std::string jwt_algorithm = "HS256";
  std::string jwt_issuer = "mailroom";
  // ours: mail_room uses Net::HTTP's 60 s defaults
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(10)};
  std::chrono::milliseconds response_timeout{std::chrono::seconds(60)};
  tls_options tls;

  bool jwt_enabled() const { return !jwt_auth_header.empty() && !jwt_secret_path.empty(); }
};

struct logger_delivery_options {
  std::string log_path;  // empty: stdout
};

// mail_room's que delivery: one row in que_jobs per message, on PostgreSQL.
struct que_options {
  std::string host = "localhost";  // a host name, an address, or a socket directory (/...)
  std::uint16_t port = 5432;
  std::string database;
  std::string username;
  secret password;
  std::string queue;  // mail_room's default: '' (Que 0.x's default queue)
  std::int32_t priority = 100;
  std::string job_class;
  // ours: connections kept open and shared by the mailboxes that use the
  // same database (mail_room opens one per message and never closes it).
  std::size_t pool_size = 4;
  std::chrono::seconds connect_timeout{10};
  std::chrono::seconds statement_timeout{30};
};

// mail_room's letter_opener delivery: each message as files to open in a browser.
struct letter_opener_options {
  std::string location;  // a directory; created if missing
};

enum class arbitration_method { noop, redis };

// ours: how the arbitration key is built.
//   scoped   (default): "<ns>:delivered:<email>:<mailbox>:<uidvalidity>:<uid>"
//   mail_room: "<ns>:delivered:<uid>" exactly as mail_room writes it; mailboxes
//              that share a namespace then block each other on equal UIDs.
enum class arbitration_key_format { scoped, mail_room };

struct arbitration_options {
  redis_target redis;
  arbitration_key_format key_format = arbitration_key_format::scoped;
  std::chrono::seconds expiration{600};  // mail_room EXPIRATION
  // ours: a claim taken before delivery ("claimed:<instance>") lives this long
  // and is renewed every third of it while its delivery runs; once the target
  // acknowledged, the key holds "delivered:<jid>" for `expiration`. A crashed
  // instance's unfinished claims free up within claim_ttl.
  std::chrono::seconds claim_ttl{10};
};

// Structured log destination: `logger: {log_path: ...}`.
struct log_destination {
  enum class kind { discard, stdout_, stderr_, file };
  kind where = kind::discard;  // mail_room logs nothing without logger.log_path
  std::string path;
};

// ours: what to do with a message larger than max_message_size.
enum class oversize_action {
  flag,  // add oversize_keyword; it stays unseen in the folder and is skipped
  move,  // UID MOVE (or COPY + \Deleted) to oversize_folder
};

// ours: how the IMAP session authenticates.
enum class auth_method {
  login,        // LOGIN with the password (mail_room's only way)
  xoauth2,      // AUTHENTICATE XOAUTH2 with an OAuth2 access token (Google, Microsoft)
  oauthbearer,  // AUTHENTICATE OAUTHBEARER (RFC 7628)
};

// ours: where the OAuth2 access token for xoauth2/oauthbearer comes from.
// With a refresh token: the refresh-token grant (RFC 6749 §6); without one:
// client credentials (§4.4). token_url and scope are filled in from the
// provider when the configuration leaves them out.
struct oauth2_options {
  std::string provider;   // "google", "microsoft", or "" (token_url given)
  std::string tenant_id;  // microsoft
  std::string token_url;
  std::string client_id;
  secret client_secret;  // may be empty for a public client with a refresh token
  secret refresh_token;  // empty: client credentials
  std::string scope;     // "": none sent

  bool client_credentials() const { return refresh_token.empty(); }
};

// ours: what happens to a message once the target acknowledged it.
enum class after_delivery_action {
  seen,    // \Seen (Graph: isRead); mail_room's way
  remove,  // \Seen \Deleted, expunged with expunge_deleted (Graph: DELETE); mail_room's
           // delete_after_delivery: true
  move,    // \Seen, then moved to move_to (Graph: isRead, then moved)
};

// ours: what a permanent error (login or certificate rejected, missing folder)
// does to the process.
enum class permanent_error_policy {
  exit_at_startup,  // exit 1 if the mailbox never worked, else keep retrying (default)
  retry,            // always keep retrying with backoff
  exit,             // always exit 1
};

// Where a mailbox's mail is read from (mail_room's inbox_method).
enum class inbox_method {
  imap,
  microsoft_graph,  // the Microsoft Graph REST API (Microsoft 365, Exchange Online)
};

// mail_room's inbox_options of a Microsoft Graph inbox. The access token is
// an application's (client credentials, permission Mail.ReadWrite); the
// loader turns these into the mailbox's oauth2_options, so that the token
// source is the one IMAP's OAuth2 uses.
struct graph_options {
  std::string tenant_id;
  std::string client_id;
  secret client_secret;
  std::chrono::seconds poll_interval{60};  // between passes
  // Without a trailing slash. https://, or http:// to a loopback host (tests).
  std::string azure_ad_endpoint = "https://login.microsoftonline.com";
  std::string graph_endpoint = "https://graph.microsoft.com";
};

struct mailbox {
  source_location where;  // the line of the "- " list entry
  inbox_method inbox = inbox_method::imap;
  graph_options graph;  // with inbox_method microsoft_graph
  std::string email;
  secret password;  // with auth_method login
  auth_method auth = auth_method::login;
  oauth2_options oauth2;  // with xoauth2 / oauthbearer, and for a Graph inbox
  std::string name;       // the IMAP folder to SELECT (Graph: a folder name or id)
  // The IMAP server; for a Graph inbox, the graph_endpoint's host and port
  // (so that server() and label() name it).
  std::string host = "imap.gmail.com";
  std::uint16_t port = 993;
  tls_options ssl;  // ssl: true by default
  bool start_tls = false;
  std::chrono::seconds idle_timeout{1740};  // at most 1740 (29 min)
  std::string search_command = "UNSEEN";
  std::uint32_t limit_max_unread = 0;  // 0: no limit
  after_delivery_action after_delivery = after_delivery_action::seen;
  std::string move_to;  // with after_delivery move (created if missing)
  bool expunge_deleted = false;

  delivery_method delivery = delivery_method::postback;
  sidekiq_options sidekiq;
  postback_options postback;
  logger_delivery_options logger_delivery;
  que_options que;
  letter_opener_options letter_opener;

  arbitration_method arbitration = arbitration_method::noop;
  arbitration_options arbitration_opts;

  log_destination log;

  // ours: safety and robustness settings (README "Configuration reference").
  bool allow_plaintext_login = false;             // LOGIN without TLS sends the password in clear
  std::chrono::seconds connect_timeout{30};       // TCP + TLS handshake + greeting
  std::chrono::seconds command_timeout{120};      // silence allowed while a command runs
  std::chrono::seconds idle_check_interval{300};  // IDLE is renewed this often (DONE + OK)
  std::uint64_t max_message_size = 25 * 1024 * 1024;
  oversize_action on_oversize = oversize_action::flag;
  std::string oversize_keyword = "$MailroomOversize";
  std::string oversize_folder;
  // ours: a message the target refuses for good (HTTP 400/413/422, a job above
  // max_job_size) is moved here, or flagged rejected_keyword when empty.
  std::string rejected_folder;
  std::string rejected_keyword = "$MailroomRejected";
  // ours: a message that arrived longer ago than this is not delivered but
  // set aside (too_old_keyword, or moved to too_old_folder) for an operator's
  // `mailroom reingest`. 0: no limit.
  std::chrono::seconds max_message_age{0};
  std::string too_old_keyword = "$MailroomTooOld";
  std::string too_old_folder;
  // ours: with sidekiq or que delivery, a job (its JSON) larger than this is
  // rejected as above instead of filling Redis or PostgreSQL. 0: no limit.
  std::uint64_t max_job_size = 0;
  permanent_error_policy on_permanent_error = permanent_error_policy::exit_at_startup;

  // The IMAP server as part of a mailbox's identity: "host:port", the host in
  // lower case (DNS names are case-insensitive), an IPv6 address in brackets.
  // UIDs and UIDVALIDITY are only unique within one server (RFC 3501
  // §2.3.1.1), so every name of a mailbox includes it.
  std::string server() const {
    std::string h = host;
    for (char& c : h)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (h.find(':') != std::string::npos) h = "[" + h + "]";
    return h + ":" + std::to_string(port);
  }
  bool is_graph() const { return inbox == inbox_method::microsoft_graph; }
  // Whether a delivered message is deleted or moved, not only marked seen.
  bool leaves_folder_after_delivery() const {
    return after_delivery != after_delivery_action::seen;
  }

  // "email/name@host:port": names one configured mailbox in metrics,
  // /readiness, --mailbox and the operator commands' output. Unique within a
  // configuration: two entries with the same identity are a config error.
  std::string label() const { return email + "/" + name + "@" + server(); }
  // "email/name" as the configuration writes it (configuration diagnostics,
  // which carry the file line as well).
  std::string config_label() const { return email + "/" + name; }
};

// The folder as part of a mailbox's identity: "INBOX" in any case is the
// same folder (RFC 3501 §5.1); other names are case-sensitive.
inline std::string canonical_folder(const std::string& name) {
  if (name.size() == 5) {
    std::string upper = name;
    for (char& c : upper)
      if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    if (upper == "INBOX") return upper;
  }
  return name;
}

struct health_check {
  bool enabled = false;  // present in the file
  std::string address = "127.0.0.1";
  std::uint16_t port = 0;
  // ours: /liveness fails once a mailbox made no progress for this long.
  std::chrono::seconds stuck_after{900};
};

// ours: `:cluster:`. Instances that share this Redis split the mailboxes
// among them: each mailbox is watched by one live instance at a time, under a
// lease (src/cluster). Absent: every instance watches every mailbox.
struct cluster_options {
  bool enabled = false;  // present in the file
  // redis_url, sentinels, redis_ssl_params as for sidekiq; `namespace`
  // (default "mailroom") prefixes the keys: "<namespace>:cluster:...".
  redis_target redis;
  // A lease not renewed for this long expires; an instance stops touching
  // its mailboxes before then. Takeover after a crash takes about this long.
  std::chrono::seconds lease_ttl{10};
};

struct config {
  std::string path;
  std::vector<mailbox> mailboxes;
  health_check health;
  cluster_options cluster;
};

}  // namespace mailroom::config
