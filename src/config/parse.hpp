// Internal steps of the loader, one per part of the file. Each reads one YAML
// mapping into the model and records diagnostics in the context.
#pragma once

#include "config/model.hpp"
#include "config/reader.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace mailroom::config::detail {

// --- redis.cpp ---
struct redis_url_result {
  std::string error;  // empty on success; never contains the URL
  std::vector<std::string> warnings;
};
// Parses redis://[user[:password]@]host[:port][/db] (and rediss://) into
// `out`: host, port, tls, username, password, db and url (without password).
redis_url_result parse_redis_url(const std::string& url, redis_target& out);
// The URL with any password removed (and the query, which may carry one).
std::string redact_url(std::string_view url);
// CGI.unescape, as redis-rb decodes URL credentials: %XX and '+' as space.
std::string cgi_unescape(std::string_view s);
// redis_url, namespace, sentinels, sentinel_username, sentinel_password,
// redis_ssl_params (+ redis_db when `with_db`).
void read_redis_target(map_view& m, redis_target& out, bool with_db);

// --- delivery.cpp ---
// delivery_method, delivery_options and the legacy top-level delivery keys.
void read_delivery(map_view& mbox, mailbox& mb);
// arbitration_method and arbitration_options.
void read_arbitration(map_view& mbox, mailbox& mb);

// --- oauth2.cpp ---
// auth_method and oauth2 (ours): LOGIN with the password, or AUTHENTICATE
// XOAUTH2 / OAUTHBEARER with a token from an OAuth2 token endpoint.
void read_auth(map_view& mbox, mailbox& mb);
// True for localhost, 127.0.0.0/8 and ::1: the only hosts an http:// (not
// https://) endpoint may name.
bool is_loopback_host(std::string_view host);
// The host of an http(s) URL (without brackets for IPv6), or "" when it has none.
std::string url_host(std::string_view url);
// `url` (the value of `key`) must be https://, or http:// to a loopback host:
// the endpoint receives `receives`. An error naming the key otherwise.
bool check_endpoint(map_view& m, std::string_view key, const std::string& url,
                    std::string_view receives);

// --- graph.cpp ---
// inbox_options of a Microsoft Graph inbox (`e`, nullptr when absent), into
// mb.graph, mb.oauth2 and the host and port that name the mailbox.
void read_graph_options(map_view& mbox, const map_view::entry* e, mailbox& mb);

// --- mailbox.cpp ---
// One `mailboxes:` entry; `index` is its 0-based position.
mailbox read_mailbox(context& ctx, const YAML::Node& node, std::size_t index);

// --- validate.cpp ---
// Checks the JWT secret file the way the postback delivery will read it:
// strict base64 after chomp, non-empty key. Never prints the content.
void check_jwt_secret(map_view& opts, const map_view::entry& path_entry, const std::string& path,
                      const std::string& issuer);
// Strict base64 (Ruby's Base64.strict_decode64). False on any deviation.
bool strict_base64_decode(std::string_view in, std::string& out);
// Warnings that need all mailboxes: the same folder watched twice.
void check_mailboxes(context& ctx, const std::vector<mailbox>& mailboxes);
// An absolute path for `p`, relative ones taken from the config's directory.
std::string resolve_path(const context& ctx, const std::string& p);

}  // namespace mailroom::config::detail
