#include "jobs/http.h"

#include <algorithm>

namespace wb {

const char* to_string(NetError e) {
  switch (e) {
    case NetError::none: return "none";
    case NetError::not_sent: return "not sent";
    case NetError::unknown_outcome: return "outcome unknown";
    case NetError::too_large: return "too large";
    case NetError::local_write: return "local write failed";
    case NetError::refused_url: return "refused URL";
  }
  return "?";
}

std::string HttpResponse::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? std::string() : it->second;
}

std::chrono::milliseconds transfer_deadline(const HttpRequest& request, long long announced_length) {
  // A lying Content-Length cannot stretch the deadline past what max_body_bytes
  // would allow to be read anyway.
  long long expected = announced_length >= 0 ? announced_length : request.deadline_expected_bytes;
  expected = std::clamp(expected, 0LL, std::max(0LL, request.max_body_bytes));
  long long per_second = std::max(1LL, request.min_bytes_per_second);
  // expected <= 64 GiB (the config's bound) keeps this product far from overflow.
  auto body = std::chrono::milliseconds(expected / per_second * 1000 + expected % per_second * 1000 / per_second);
  return request.connect_timeout + request.stall_time + body;
}

bool url_allowed(const std::string& url, bool allow_loopback_http) {
  auto host_ok = [](const std::string& rest) {
    // rest starts right after "scheme://"; refuse userinfo tricks like https://a@b.
    auto end = rest.find_first_of("/?#");
    std::string authority = rest.substr(0, end);
    return !authority.empty() && authority.find('@') == std::string::npos &&
           authority.find_first_of(" \t\r\n\\") == std::string::npos;
  };
  if (url.rfind("https://", 0) == 0) return host_ok(url.substr(8));
  if (!allow_loopback_http || url.rfind("http://", 0) != 0) return false;
  std::string rest = url.substr(7);
  if (!host_ok(rest)) return false;
  std::string authority = rest.substr(0, rest.find_first_of("/?#"));
  std::string host = authority;
  if (host.rfind("[::1]", 0) == 0) return host.size() == 5 || host[5] == ':';
  host = host.substr(0, host.find(':'));
  return host == "127.0.0.1" || host == "localhost";
}

}  // namespace wb
