#include "tests/faultproxy/proxy.h"

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "jobs/util.h"

namespace faultproxy {

using nlohmann::json;
using sim::Request;
using sim::Response;

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
    s.replace(pos, from.size(), to);
}

std::string reset_in(std::chrono::seconds d) { return wb::iso8601_utc(std::chrono::system_clock::now() + d); }

Response json_answer(int status, const std::string& body) {
  Response r;
  r.status = status;
  r.body = body;
  return r;
}

// A status line and headers as given, a Content-Length of `announced`, and
// `body` (which may be shorter: the close then truncates the answer).
std::string raw_answer(long status, const std::string& content_type,
                       const std::vector<std::pair<std::string, std::string>>& headers, size_t announced,
                       const std::string& body) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " Status\r\n";
  out += "Content-Type: " + content_type + "\r\n";
  for (const auto& [k, v] : headers) out += k + ": " + v + "\r\n";
  out += "Content-Length: " + std::to_string(announced) + "\r\nConnection: close\r\n\r\n";
  return out + body;
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* headers = static_cast<std::vector<std::pair<std::string, std::string>>*>(user);
  std::string line(data, size * n);
  if (starts_with(line, "HTTP/")) headers->clear();  // a new answer (after a 100 Continue)
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
    headers->emplace_back(line.substr(0, colon), value);
  }
  return size * n;
}

}  // namespace

const std::vector<FaultKind>& fault_kinds() {
  static const std::vector<FaultKind> kinds = {
      {"malformed_json", Scope::api_get, false, "200 with JSON cut in the middle"},
      {"empty_object", Scope::api_get, false, "200 with {}"},
      {"deep_json", Scope::api_get, false,
       "JSON nested deep_levels deep: in `error` of a 422 FAILED status, in `output` of a COMPLETED result"},
      {"truncated", Scope::api_get, true, "the real answer, Content-Length larger than the bytes sent, then close"},
      {"headers_only", Scope::api_get, false, "200 with headers, no Content-Length, no body, then close"},
      {"duplicate_headers", Scope::api_get, true,
       "the real answer with two Content-Type and two x-rate-limit-reset-at-utc headers"},
      {"wrong_content_type", Scope::api_get, true, "the real answer as text/html, wrapped in an HTML page"},
      {"status_418", Scope::api_get, false, "418 with a JSON error"},
      {"status_299", Scope::api_get, true, "the real body with status 299"},
      {"status_302", Scope::api_get, false, "302 without Location, empty body"},
      {"status_599", Scope::api_get, false, "599 with a JSON error"},
      {"huge_500", Scope::api_get, false, "500 with a huge_bytes JSON error body"},
      {"garbage_429", Scope::api_get, false, "429 whose x-rate-limit-reset-at-utc is garbage"},
      {"drop", Scope::api_get, false, "the connection closed without an answer"},
      {"submit_500", Scope::submit, false, "500 before forwarding (not billed)"},
      {"submit_429", Scope::submit, false, "429 with a reset 1 s ahead, before forwarding (not billed)"},
      {"submit_503_html", Scope::submit, false, "503 as an HTML page, before forwarding (not billed)"},
      {"submit_drop", Scope::submit, true, "forwarded (billed), then the connection closed without an answer"},
      {"submit_truncated", Scope::submit, true, "forwarded (billed), the answer cut short, then close"},
      {"submit_id_path", Scope::submit, true,
       "forwarded (billed), answered with request_id ../../v1/get-user-credits?x=1"},
      {"submit_id_crlf", Scope::submit, true, "forwarded (billed), answered with a request_id holding CR LF"},
      {"submit_id_duplicate", Scope::submit, true,
       "forwarded (billed), answered with the request_id of an earlier submit"},
      {"submit_empty_object", Scope::submit, true, "forwarded (billed), answered 200 {}"},
      {"download_trickle", Scope::download, true,
       "the real headers, then 4 bytes every 0.5 s for trickle_seconds, then close"},
      {"download_truncated", Scope::download, true, "the real headers, half the body, then close"},
      {"download_huge_500", Scope::download, false, "500 with a huge_bytes body"},
      {"download_404_once", Scope::download, false, "404, once per output file"},
  };
  return kinds;
}

const FaultKind* find_kind(const std::string& name) {
  for (const auto& k : fault_kinds())
    if (name == k.name) return &k;
  return nullptr;
}

Proxy::Proxy(Options options)
    : opt_(std::move(options)), server_([this](const Request& r) { return handle(r); }), rng_(opt_.seed) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
}

void Proxy::start(int port) { server_.start(port); }
void Proxy::stop() { server_.stop(); }
std::string Proxy::base_url() const { return "http://127.0.0.1:" + std::to_string(port()); }

std::string Proxy::stats_json() {
  std::lock_guard<std::mutex> lock(mu_);
  json faults = json::object();
  for (const auto& k : fault_kinds()) faults[k.name] = tally_.count(k.name) ? tally_[k.name] : 0;
  return json{{"requests", requests_},
              {"forwarded", forwarded_},
              {"upstream_failures", upstream_failures_},
              {"faults", faults}}
      .dump();
}

Proxy::Upstream Proxy::forward(const Request& req) {
  Upstream up;
  CURL* c = curl_easy_init();
  std::string url = opt_.upstream + req.path + (req.query.empty() ? "" : "?" + req.query);
  curl_slist* headers = nullptr;
  for (const char* name : {"x-api-key", "content-type", "range", "accept"})
    if (!req.header(name).empty()) headers = curl_slist_append(headers, (std::string(name) + ": " + req.header(name)).c_str());
  headers = curl_slist_append(headers, "Expect:");
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
  curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &up.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &up.headers);
  if (req.method == "POST") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, req.body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
  } else if (req.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (req.method != "GET") {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  }
  CURLcode code = curl_easy_perform(c);
  if (code == CURLE_OK) {
    up.ok = true;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &up.status);
  }
  curl_easy_cleanup(c);
  curl_slist_free_all(headers);

  std::vector<std::pair<std::string, std::string>> kept;
  for (auto& [k, v] : up.headers) {
    std::string name = lower(k);
    if (name == "content-type") up.content_type = v;
    else if (name != "content-length" && name != "connection" && name != "transfer-encoding" && name != "date")
      kept.emplace_back(k, v);
  }
  up.headers = std::move(kept);
  if (!starts_with(up.content_type, "video/")) replace_all(up.body, opt_.upstream, base_url());

  std::lock_guard<std::mutex> lock(mu_);
  ++forwarded_;
  if (!up.ok) ++upstream_failures_;
  if (up.ok && up.status == 200 && req.method == "POST" && starts_with(req.path, "/v2/")) {
    auto j = json::parse(up.body, nullptr, false);
    if (j.is_object() && j.contains("request_id") && j["request_id"].is_string())
      request_ids_.push_back(j["request_id"].get<std::string>());
  }
  return up;
}

Response Proxy::relay(const Upstream& up) {
  Response r;
  if (!up.ok) {
    r.drop = true;  // the upstream said nothing (or dropped us): neither do we
    return r;
  }
  r.status = static_cast<int>(up.status);
  r.content_type = up.content_type.empty() ? "application/octet-stream" : up.content_type;
  r.headers = up.headers;
  r.body = up.body;
  return r;
}

const FaultKind* Proxy::draw(Scope scope, const Request& req) {
  std::lock_guard<std::mutex> lock(mu_);
  auto eligible = [&](const FaultKind& k) {
    if (k.scope != scope) return false;
    if (std::string(k.name) == "submit_id_duplicate") return !request_ids_.empty();
    if (std::string(k.name) == "download_404_once") return !not_found_once_.count(req.path);
    return true;
  };
  if (!opt_.force.empty()) {
    const FaultKind* k = find_kind(opt_.force);
    return k && eligible(*k) ? k : nullptr;
  }
  for (const auto& k : fault_kinds()) {
    auto it = opt_.rates.find(k.name);
    if (it == opt_.rates.end() || it->second <= 0 || !eligible(k)) continue;
    if (std::uniform_real_distribution<double>(0, 1)(rng_) < it->second) return &k;
  }
  return nullptr;
}

Response Proxy::handle(const Request& req) {
  if (req.path == "/proxy/stats") return json_answer(200, stats_json());
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++requests_;
  }
  const FaultKind* kind = nullptr;
  if (req.method == "GET" && starts_with(req.path, "/v2/requests/")) kind = draw(Scope::api_get, req);
  else if (req.method == "POST" && starts_with(req.path, "/v2/")) kind = draw(Scope::submit, req);
  else if (req.method == "GET" && starts_with(req.path, "/outputs/")) kind = draw(Scope::download, req);
  if (!kind) return relay(forward(req));
  return inject(*kind, req);
}

Response Proxy::inject(const FaultKind& kind, const Request& req) {
  const std::string name = kind.name;
  Upstream up;
  if (kind.forwards) {
    up = forward(req);
    // Only a plain answer is mutated: an upstream fault (a 5xx, a 429, a drop)
    // goes back as it came, and no fault is counted.
    bool plain = up.ok && (up.status == 200 || up.status == 206 ||
                           (kind.scope == Scope::api_get && up.status == 422));
    if (!plain) return relay(up);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++tally_[name];
    std::string target = req.path + (req.query.empty() ? "" : "?" + req.query);
    std::cerr << "segmind-faultproxy: fault " << name << " on " << req.method << " " << target << "\n";
  }
  Response r;
  auto half = [](const std::string& body) { return body.substr(0, body.size() / 2); };
  auto huge_error = [&] { return "{\"error\": \"" + std::string(opt_.huge_bytes, 'x') + "\"}"; };

  if (name == "malformed_json") return json_answer(200, "{\"status\": \"COMPLETED\", \"output\": \"http://");
  if (name == "empty_object") return json_answer(200, "{}");
  if (name == "deep_json") {
    const size_t n = opt_.deep_levels;
    if (ends_with(req.path, "/status"))
      return json_answer(422, "{\"status\": \"FAILED\", \"error\": " + std::string(n, '[') + std::string(n, ']') + "}");
    std::string deep;
    deep.reserve(n * 11 + 8);
    for (size_t i = 0; i < n; ++i) deep += "{\"video\": ";
    deep += "null" + std::string(n, '}');
    return json_answer(200, "{\"status\": \"COMPLETED\", \"output\": " + deep + "}");
  }
  if (name == "truncated" || name == "submit_truncated" || name == "download_truncated") {
    r.raw = raw_answer(up.status, up.content_type, up.headers, up.body.size(), half(up.body));
    return r;
  }
  if (name == "headers_only") {
    r.raw = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
    return r;
  }
  if (name == "duplicate_headers") {
    r = relay(up);
    r.content_type = "application/json";
    r.headers.emplace_back("Content-Type", "text/html");
    r.headers.emplace_back("x-rate-limit-reset-at-utc", reset_in(std::chrono::seconds(1)));
    r.headers.emplace_back("x-rate-limit-reset-at-utc", "garbage");
    return r;
  }
  if (name == "wrong_content_type") {
    r = relay(up);
    r.content_type = "text/html";
    r.body = "<html><body><pre>" + up.body + "</pre></body></html>";
    return r;
  }
  if (name == "status_418") return json_answer(418, "{\"error\": \"I'm a teapot\"}");
  if (name == "status_299") {
    r = relay(up);
    r.status = 299;
    return r;
  }
  if (name == "status_302") {
    r.status = 302;
    r.content_type = "text/plain";
    return r;
  }
  if (name == "status_599") return json_answer(599, "{\"error\": \"network connect timeout error\"}");
  if (name == "huge_500") return json_answer(500, huge_error());
  if (name == "garbage_429") {
    static const char* garbage[] = {"garbage", "", "2024-13-45T99:99:99Z", "\x01\x02\x7f", "-1", "tomorrow"};
    r = json_answer(429, "{\"error\": \"Rate limit exceeded\"}");
    std::lock_guard<std::mutex> lock(mu_);
    r.headers.emplace_back("x-rate-limit-reset-at-utc",
                           garbage[std::uniform_int_distribution<size_t>(0, std::size(garbage) - 1)(rng_)]);
    return r;
  }
  if (name == "drop" || name == "submit_drop") {
    r.drop = true;
    return r;
  }
  if (name == "submit_500") return json_answer(500, "{\"error\": \"Internal server error\"}");
  if (name == "submit_429") {
    r = json_answer(429, "{\"error\": \"Rate limit exceeded\"}");
    r.headers.emplace_back("x-rate-limit-reset-at-utc", reset_in(std::chrono::seconds(1)));
    return r;
  }
  if (name == "submit_503_html") {
    r.status = 503;
    r.content_type = "text/html";
    r.body = "<!DOCTYPE html><html><head><title>503 Service Temporarily Unavailable</title></head>"
             "<body><h1>503 Service Temporarily Unavailable</h1></body></html>";
    return r;
  }
  if (name == "submit_id_path" || name == "submit_id_crlf" || name == "submit_id_duplicate") {
    std::string id = name == "submit_id_path" ? "../../v1/get-user-credits?x=1" : "abc\r\nx-injected: yes";
    if (name == "submit_id_duplicate") {
      std::lock_guard<std::mutex> lock(mu_);
      auto real = json::parse(up.body, nullptr, false);
      std::string own = real.is_object() ? real.value("request_id", "") : "";
      id = request_ids_.front();
      for (const auto& earlier : request_ids_)
        if (earlier != own) id = earlier;  // the latest earlier one that is not this submit's
    }
    return json_answer(200, json{{"request_id", id},
                                 {"status", "QUEUED"},
                                 {"status_url", base_url() + "/v2/requests/" + id + "/status"},
                                 {"response_url", base_url() + "/v2/requests/" + id}}
                                .dump());
  }
  if (name == "submit_empty_object") return json_answer(200, "{}");
  if (name == "download_trickle") {
    constexpr size_t kBytes = 4;
    constexpr auto kPause = std::chrono::milliseconds(500);
    size_t chunks = static_cast<size_t>(opt_.trickle_seconds * 1000 / kPause.count());
    std::string head = raw_answer(up.status, up.content_type, up.headers, up.body.size(), "");
    r.raw = head + up.body.substr(0, std::min(up.body.size() > 0 ? up.body.size() - 1 : 0, chunks * kBytes));
    r.raw_head = head.size();
    r.raw_chunk = kBytes;
    r.raw_pause = kPause;
    return r;
  }
  if (name == "download_huge_500") {
    r.status = 500;
    r.content_type = "text/plain";
    r.body = std::string(opt_.huge_bytes, 'x');
    return r;
  }
  if (name == "download_404_once") {
    std::lock_guard<std::mutex> lock(mu_);
    not_found_once_.insert(req.path);
    return json_answer(404, "{\"error\": \"No such output\"}");
  }
  return relay(kind.forwards ? up : forward(req));
}

}  // namespace faultproxy
