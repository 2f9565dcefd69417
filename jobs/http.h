// The HTTP seam. Everything above this layer speaks HttpRequest/HttpResponse and
// a Transport that completes requests asynchronously; only curl_transport.cpp
// touches libcurl, and tests substitute a FakeTransport.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace wb {

// How a request failed below HTTP. The distinction between not_sent and
// unknown_outcome is what keeps a submit from being paid twice.
enum class NetError {
  none,
  not_sent,         // DNS, connect, TLS: the server cannot have seen the request
  unknown_outcome,  // sent (or maybe sent) and no complete answer
  too_large,        // the body passed max_body_bytes
  local_write,      // writing the body to sink_fd failed (disk full, ...)
  refused_url,      // the URL (or a redirect) breaks the https/loopback rule
};

const char* to_string(NetError e);

enum class ConnectionUse { may_reuse, fresh };

// What is kept of the body of an answer that is not 2xx, whatever max_body_bytes
// says: the rest is not read and the connection is closed, and the answer is
// reported as an ordinary one (status and the capped body, error none).
constexpr long long kMaxErrorBodyBytes = 64 << 10;

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;
  // fresh: a new connection that is closed afterwards, so libcurl never re-sends
  // the request by itself on a dead reused connection (submits use this).
  ConnectionUse connection = ConnectionUse::may_reuse;
  std::chrono::milliseconds timeout{60000};
  std::chrono::milliseconds connect_timeout{15000};
  int sink_fd = -1;  // when >= 0 the body goes to this file instead of HttpResponse::body
  long long max_body_bytes = 16 << 20;
  // With sink_fd: ask for the body from this byte on (Range). A 206 answer is
  // appended at the fd's position; a 200 (Range ignored) restarts the file.
  long long resume_from = 0;
  int max_redirects = 0;  // followed by the transport, each checked against the URL rule
  // Speed floor: a transfer under min_bytes_per_second for stall_time (whole
  // seconds, rounded up) is cut short (unknown_outcome once the request was sent).
  long long min_bytes_per_second = 1;
  std::chrono::milliseconds stall_time{60000};
  // A deadline scaled to the body, checked besides `timeout`; 0: none. When set,
  // the request is cut short like a stall once transfer_deadline() has passed
  // since it started; this is the size assumed when no Content-Length is announced.
  long long deadline_expected_bytes = 0;
};

// connect_timeout + stall_time + expected / min_bytes_per_second, where expected
// is `announced_length` (the answer's Content-Length, -1 when unknown) or else
// request.deadline_expected_bytes. Only meaningful when that is > 0.
std::chrono::milliseconds transfer_deadline(const HttpRequest& request, long long announced_length);

// The complete length that a 416 answer's Content-Range names ("bytes */N",
// RFC 9110 section 14.4), or -1 when the value is anything else.
long long unsatisfied_range_length(const std::string& content_range);

struct HttpResponse {
  NetError error = NetError::none;
  std::string error_text;
  long status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  long long body_bytes = 0;
  std::string header(const std::string& lower_name) const;
};

using HttpCallback = std::function<void(HttpResponse)>;

class Transport {
 public:
  virtual ~Transport() = default;
  // Starts a request; `done` runs later, from the thread that drives the transport.
  virtual void start(HttpRequest request, HttpCallback done) = 0;
  virtual size_t active() const = 0;
};

// The one URL rule, applied to the config at start and to every request and
// redirect: https anywhere; plain http only to 127.0.0.1, localhost or [::1],
// and only when allowed; no userinfo, no spaces or control characters, a plain
// host name and a numeric port.
bool url_allowed(const std::string& url, bool allow_loopback_http);

}  // namespace wb
