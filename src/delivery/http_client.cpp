#include "delivery/http_client.hpp"

#include "delivery/deliverer.hpp"

#include <curl/curl.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <iterator>
#include <memory>
#include <mutex>

namespace mailroom::delivery {

namespace asio = boost::asio;

struct http_client::outcome {
  boost::system::error_code ec;
  std::string detail;
  http_response response;
};

namespace {

struct easy_closer {
  void operator()(CURL* h) const { curl_easy_cleanup(h); }
};
struct slist_closer {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return (x >= 'A' && x <= 'Z' ? x + 32 : x) == (y >= 'A' && y <= 'Z' ? y + 32 : y);
  });
}

struct body_sink {
  std::string* body;
  std::size_t limit;
  bool truncated = false;
};

// Keeps the first `limit` bytes. Returning less than given makes curl stop
// reading with CURLE_WRITE_ERROR, which run() turns back into success: a huge
// error page is not worth the transfer time.
std::size_t write_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto* sink = static_cast<body_sink*>(user);
  const std::size_t n = size * count;
  const std::size_t room = sink->limit - std::min(sink->limit, sink->body->size());
  if (n > room) {
    sink->body->append(data, room);
    sink->truncated = true;
    return 0;
  }
  sink->body->append(data, n);
  return n;
}

struct header_sink {
  const std::vector<std::string>* wanted;
  std::vector<std::pair<std::string, std::string>>* out;
};

// One response header line per call ("Name: value\r\n"; also the status line
// and the blank line, and again for each response of a redirect or a 100).
std::size_t keep_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto* sink = static_cast<header_sink*>(user);
  const std::size_t n = size * count;
  const std::string_view line(data, n);
  if (line.rfind("HTTP/", 0) == 0) {  // a new response: forget the previous one's
    sink->out->clear();
    return n;
  }
  const auto colon = line.find(':');
  if (colon == std::string_view::npos) return n;
  const std::string_view name = line.substr(0, colon);
  for (const auto& w : *sink->wanted) {
    if (!iequals(name, w)) continue;
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
      value.remove_suffix(1);
    auto& out = *sink->out;
    const auto it =
        std::find_if(out.begin(), out.end(), [&](const auto& h) { return h.first == w; });
    if (it != out.end()) {
      it->second.assign(value);
    } else {
      out.emplace_back(w, std::string(value));
    }
  }
  return n;
}

// Called by curl about once a second even when the transfer is idle, so that a
// client being destroyed does not wait for a 60 s response timeout.
int check_abort(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<const std::atomic<bool>*>(user)->load(std::memory_order_relaxed) ? 1 : 0;
}

bool has_forbidden_char(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

errc classify(CURLcode code) {
  switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
      return errc::timed_out;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
      return errc::misconfigured;
    default:
      return errc::target_unavailable;
  }
}

long clamp_ms(std::chrono::milliseconds d) {
  // curl treats 0 as "no timeout"; a configured 0 means "immediately".
  return static_cast<long>(std::max<std::chrono::milliseconds::rep>(d.count(), 1));
}

}  // namespace

http_client::http_client(std::size_t threads) : pool_(std::max<std::size_t>(threads, 1)) {
  // curl_global_init is not guaranteed thread-safe on every build; once per process.
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

http_client::~http_client() {
  stopping_.store(true, std::memory_order_relaxed);
  pool_.join();
}

asio::awaitable<boost::system::result<http_response>> http_client::perform(
    http_request req, std::string& error_detail) {
  // co_spawn keeps the caller's executor busy (work-tracked) while the request
  // runs on the pool and resumes the caller through that executor.
  outcome o = co_await asio::co_spawn(pool_, run_on_pool(std::move(req)), asio::use_awaitable);
  if (o.ec) {
    error_detail = std::move(o.detail);
    co_return o.ec;
  }
  co_return std::move(o.response);
}

asio::awaitable<http_client::outcome> http_client::run_on_pool(http_request req) {
  co_return run(req);
}

http_client::outcome http_client::run(const http_request& req) {
  outcome out;
  const auto fail = [&out](errc e, std::string detail) {
    out.ec = make_error_code(e);
    out.detail = std::move(detail);
    return std::move(out);
  };
  if (stopping_.load(std::memory_order_relaxed)) {
    return fail(errc::target_unavailable, "HTTP client shutting down");
  }
  std::vector<std::pair<std::string, std::string>> prepared;
  if (req.prepare) {
    std::string error;
    if (!req.prepare(prepared, error)) return fail(errc::misconfigured, std::move(error));
  }

  std::unique_ptr<CURL, easy_closer> easy(curl_easy_init());
  if (!easy) return fail(errc::target_unavailable, "curl_easy_init failed");
  CURL* h = easy.get();

  std::unique_ptr<curl_slist, slist_closer> headers;
  bool caller_expect = false;
  std::vector<std::pair<std::string, std::string>> all_headers = req.headers;
  all_headers.insert(all_headers.end(), std::make_move_iterator(prepared.begin()),
                     std::make_move_iterator(prepared.end()));
  for (const auto& [name, value] : all_headers) {
    if (name.empty() || has_forbidden_char(name) || has_forbidden_char(value) ||
        name.find(':') != std::string::npos) {
      return fail(errc::misconfigured,
                  "invalid HTTP header name or value for " +
                      std::string(has_forbidden_char(name) ? "a header" : name));
    }
    caller_expect = caller_expect || iequals(name, "Expect");
    // "Name;" is curl's way to send a header with an empty value ("Name:" would
    // remove the header instead).
    const std::string line = value.empty() ? name + ";" : name + ": " + value;
    curl_slist* next = curl_slist_append(headers.get(), line.c_str());
    if (next == nullptr) return fail(errc::target_unavailable, "out of memory");
    headers.release();
    headers.reset(next);
  }
  if (!caller_expect) {
    // curl asks for "100 Continue" before large bodies and then waits a second
    // for it; Net::HTTP never did, and many servers don't answer it.
    curl_slist* next = curl_slist_append(headers.get(), "Expect:");
    if (next == nullptr) return fail(errc::target_unavailable, "out of memory");
    headers.release();
    headers.reset(next);
  }

  char error_buffer[CURL_ERROR_SIZE] = {};
  body_sink sink{&out.response.body, req.max_response_body};
  header_sink hsink{&req.capture_headers, &out.response.headers};

  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(h, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  // HTTP/1.1 like Net::HTTP, also over TLS where curl would offer HTTP/2.
  curl_easy_setopt(h, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
  // Several threads use curl; signals (for DNS timeouts) are not safe then.
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  // No CURLOPT_PROXY: curl then takes the proxy from the environment, as
  // Net::HTTP does for mail_room.

  if (req.method == "GET" && req.body.empty()) {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, req.body.data());
    if (req.method != "POST") curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  }
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());

  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, clamp_ms(req.connect_timeout));
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, clamp_ms(req.total_timeout));

  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, req.tls.verify_peer ? 1L : 0L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, req.tls.verify_peer ? 2L : 0L);
  if (!req.tls.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, req.tls.ca_file.c_str());
  if (!req.tls.ca_path.empty()) curl_easy_setopt(h, CURLOPT_CAPATH, req.tls.ca_path.c_str());

  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &write_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
  if (!req.capture_headers.empty()) {
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &keep_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &hsink);
  }
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, &check_abort);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, &stopping_);

  const CURLcode code = curl_easy_perform(h);
  if (code != CURLE_OK && !(code == CURLE_WRITE_ERROR && sink.truncated)) {
    if (code == CURLE_ABORTED_BY_CALLBACK) {
      return fail(errc::target_unavailable, "HTTP client shutting down");
    }
    std::string detail = error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(code);
    return fail(classify(code), std::move(detail));
  }
  out.response.truncated = sink.truncated;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out.response.status);
  return out;
}

const std::string* http_response::header(std::string_view name) const {
  for (const auto& [n, v] : headers)
    if (iequals(n, name)) return &v;
  return nullptr;
}

}  // namespace mailroom::delivery
