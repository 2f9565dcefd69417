#include "jobs/http.h"

#include <algorithm>
#include <cctype>

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

long long unsatisfied_range_length(const std::string& content_range) {
  size_t b = content_range.find_first_not_of(" \t");
  size_t e = content_range.find_last_not_of(" \t");
  if (b == std::string::npos) return -1;
  const std::string v = content_range.substr(b, e - b + 1);
  const std::string unit = "bytes */";
  if (v.size() <= unit.size() || v.size() > unit.size() + 18) return -1;  // 18 digits fit in a long long
  for (size_t i = 0; i < unit.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(v[i])) != unit[i]) return -1;
  long long n = 0;
  for (size_t i = unit.size(); i < v.size(); ++i) {
    if (v[i] < '0' || v[i] > '9') return -1;
    n = n * 10 + (v[i] - '0');
  }
  return n;
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
  // scheme://host[:port][/path][?query][#fragment], nothing else: no userinfo,
  // no spaces or control characters anywhere, a host of letters, digits, dots
  // and dashes (or [::1]), a port of digits.
  for (unsigned char c : url)
    if (c <= 0x20 || c == 0x7f || c == '\\') return false;
  bool https = url.rfind("https://", 0) == 0;
  bool http = !https && url.rfind("http://", 0) == 0;
  if (!https && !(http && allow_loopback_http)) return false;
  std::string rest = url.substr(https ? 8 : 7);
  std::string authority = rest.substr(0, rest.find_first_of("/?#"));
  if (authority.empty() || authority.find('@') != std::string::npos) return false;
  std::string host = authority, port;
  if (host.front() == '[') {
    auto close = host.find(']');
    if (close == std::string::npos) return false;
    port = host.substr(close + 1);
    host = host.substr(0, close + 1);
    if (!port.empty() && port.front() != ':') return false;
  } else if (auto colon = host.find(':'); colon != std::string::npos) {
    port = host.substr(colon);
    host = host.substr(0, colon);
  }
  if (!port.empty()) {
    port.erase(0, 1);
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return false;
  }
  if (http) return host == "127.0.0.1" || host == "localhost" || host == "[::1]";
  if (host.empty() || host.front() == '.' || host.front() == '-') return false;
  if (host.front() == '[') return host.size() > 2 && host.find_first_not_of("0123456789abcdefABCDEF:.", 1) == host.size() - 1;
  return host.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == std::string::npos;
}

}  // namespace wb
