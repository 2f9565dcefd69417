#include "jobs/http.h"

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
