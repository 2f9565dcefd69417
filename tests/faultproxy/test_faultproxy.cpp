// The fault proxy itself: with no fault it forwards faithfully (URLs rewritten
// to its own), and each fault kind, forced, comes out in the shape it promises.
#include <curl/curl.h>
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "tests/faultproxy/proxy.h"
#include "tests/sim/simulator.h"
#include "tests/support.h"

using nlohmann::json;

namespace {

struct Answer {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // lower-cased names
  std::string body;
  std::vector<std::string> all(const std::string& name) const {
    std::vector<std::string> out;
    for (const auto& [k, v] : headers)
      if (k == name) out.push_back(v);
    return out;
  }
};

size_t on_body(char* d, size_t s, size_t n, void* u) {
  static_cast<std::string*>(u)->append(d, s * n);
  return s * n;
}

size_t on_header(char* d, size_t s, size_t n, void* u) {
  std::string line(d, s * n);
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon), value = line.substr(colon + 1);
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    value.erase(0, value.find_first_not_of(' '));
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
    static_cast<Answer*>(u)->headers.emplace_back(name, value);
  }
  return s * n;
}

Answer call(const std::string& url, const std::string& post_body = "") {
  Answer a;
  CURL* c = curl_easy_init();
  curl_slist* h = curl_slist_append(nullptr, "x-api-key: k");
  h = curl_slist_append(h, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(c, CURLOPT_FORBID_REUSE, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &a.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &a);
  if (!post_body.empty()) curl_easy_setopt(c, CURLOPT_POSTFIELDS, post_body.c_str());
  a.code = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.status);
  curl_easy_cleanup(c);
  curl_slist_free_all(h);
  return a;
}

const std::string kSubmit = R"({"prompt": "a: p", "image": "https://cdn.example/a.png", "duration": 4})";

// A simulator with one finished job, and a proxy in front of it per case.
struct Bench {
  sim::Simulator sim{[] {
    sim::Options o;
    o.time_scale = 0.0005;
    o.expiry_seconds = 1e9;
    o.output_shape = "string";
    return o;
  }()};
  std::string done_id;
  Bench() {
    sim.start(0);
    auto a = call(sim.base_url() + "/v2/wan2.7-i2v", kSubmit);
    REQUIRE(a.status == 200);
    done_id = json::parse(a.body)["request_id"];
    REQUIRE(test::eventually([&] {
      return call(sim.base_url() + "/v2/requests/" + done_id + "/status").body.find("COMPLETED") != std::string::npos;
    }));
  }
  int billed() { return sim.stats().submits_accepted; }
};

std::unique_ptr<faultproxy::Proxy> proxy_for(Bench& b, const std::string& force) {
  faultproxy::Options o;
  o.upstream = b.sim.base_url();
  o.force = force;
  o.trickle_seconds = 1;
  o.huge_bytes = 20u << 20;
  auto p = std::make_unique<faultproxy::Proxy>(o);
  p->start(0);
  return p;
}

int tally(faultproxy::Proxy& p, const std::string& kind) {
  return json::parse(p.stats_json())["faults"][kind].get<int>();
}

}  // namespace

TEST_CASE("without a fault the proxy forwards every answer as it came, with URLs pointing at itself") {
  Bench b;
  auto p = proxy_for(b, "");
  std::string base = p->base_url();
  auto status = call(base + "/v2/requests/" + b.done_id + "/status");
  CHECK(status.status == 200);
  CHECK(json::parse(status.body)["status"] == "COMPLETED");
  auto result = call(base + "/v2/requests/" + b.done_id);
  std::string url = json::parse(result.body)["output"];
  CHECK(url == base + "/outputs/" + b.done_id + ".mp4");
  auto video = call(url);
  CHECK(video.code == CURLE_OK);
  CHECK(video.body == std::string(sim::sample_mp4()));
  auto unknown = call(base + "/v2/requests/nope/status");
  CHECK(unknown.status == 404);
  int before = b.billed();
  auto submit = call(base + "/v2/wan2.7-i2v", kSubmit);
  CHECK(submit.status == 200);
  CHECK(json::parse(submit.body)["status_url"].get<std::string>().rfind(base, 0) == 0);
  CHECK(b.billed() == before + 1);
  json stats = json::parse(p->stats_json());
  CHECK(stats["forwarded"] == 5);
  for (auto& [kind, n] : stats["faults"].items()) CHECK_MESSAGE(n == 0, kind);
}

TEST_CASE("each fault kind on a status or result GET, forced, comes out in its hostile shape") {
  Bench b;
  for (const auto& kind : faultproxy::fault_kinds()) {
    if (kind.scope != faultproxy::Scope::api_get) continue;
    CAPTURE(kind.name);
    auto p = proxy_for(b, kind.name);
    std::string status_url = p->base_url() + "/v2/requests/" + b.done_id + "/status";
    std::string result_url = p->base_url() + "/v2/requests/" + b.done_id;
    Answer a = call(status_url);
    std::string name = kind.name;
    if (name == "malformed_json") {
      CHECK(a.status == 200);
      CHECK(json::parse(a.body, nullptr, false).is_discarded());
    } else if (name == "empty_object") {
      CHECK(a.body == "{}");
    } else if (name == "deep_json") {
      CHECK(a.status == 422);
      CHECK(a.body.rfind("{\"status\": \"FAILED\", \"error\": [[[", 0) == 0);
      CHECK(a.body.size() > 200000);
      Answer r = call(result_url);
      CHECK(r.status == 200);
      CHECK(r.body.find("\"output\": {\"video\": {\"video\": ") != std::string::npos);
      CHECK(r.body.size() > 1000000);
    } else if (name == "truncated") {
      CHECK(a.code == CURLE_PARTIAL_FILE);
    } else if (name == "headers_only") {
      CHECK(a.code == CURLE_OK);
      CHECK(a.status == 200);
      CHECK(a.body.empty());
    } else if (name == "duplicate_headers") {
      CHECK(a.all("content-type").size() == 2);
      CHECK(a.all("x-rate-limit-reset-at-utc").size() == 2);
      CHECK(json::parse(a.body)["status"] == "COMPLETED");
    } else if (name == "wrong_content_type") {
      CHECK(a.all("content-type") == std::vector<std::string>{"text/html"});
      CHECK(a.body.find("<html>") == 0);
      CHECK(a.body.find("COMPLETED") != std::string::npos);
    } else if (name.rfind("status_", 0) == 0) {
      CHECK(a.status == std::stol(name.substr(7)));
      if (name == "status_302") CHECK(a.all("location").empty());
    } else if (name == "huge_500") {
      CHECK(a.status == 500);
      CHECK(a.body.size() >= (20u << 20));
    } else if (name == "garbage_429") {
      CHECK(a.status == 429);
      REQUIRE(a.all("x-rate-limit-reset-at-utc").size() == 1);
      CHECK(!wb::parse_reset_time(a.all("x-rate-limit-reset-at-utc")[0]));
    } else if (name == "drop") {
      CHECK(a.code == CURLE_GOT_NOTHING);
    } else {
      FAIL("no expectation for this kind");
    }
    CHECK(tally(*p, name) >= 1);
  }
}

TEST_CASE("each submit fault kind, forced, answers its shape and is billed only when it says so") {
  Bench b;
  for (const auto& kind : faultproxy::fault_kinds()) {
    if (kind.scope != faultproxy::Scope::submit) continue;
    CAPTURE(kind.name);
    auto p = proxy_for(b, kind.name);
    std::string url = p->base_url() + "/v2/wan2.7-i2v";
    std::string name = kind.name;
    std::string earlier;
    if (name == "submit_id_duplicate") {  // the first submit has no earlier id to repeat: forwarded as is
      earlier = json::parse(call(url, kSubmit).body)["request_id"];
      CHECK(tally(*p, name) == 0);
    }
    int before = b.billed();
    Answer a = call(url, kSubmit);
    CHECK(b.billed() == before + (kind.forwards ? 1 : 0));
    auto j = json::parse(a.body, nullptr, false);
    if (name == "submit_500") {
      CHECK(a.status == 500);
    } else if (name == "submit_429") {
      CHECK(a.status == 429);
      CHECK(wb::parse_reset_time(a.all("x-rate-limit-reset-at-utc").at(0)));
    } else if (name == "submit_503_html") {
      CHECK(a.status == 503);
      CHECK(a.body.find("<html>") != std::string::npos);
    } else if (name == "submit_drop") {
      CHECK(a.code == CURLE_GOT_NOTHING);
    } else if (name == "submit_truncated") {
      CHECK(a.code == CURLE_PARTIAL_FILE);
    } else if (name == "submit_id_path") {
      CHECK(j["request_id"] == "../../v1/get-user-credits?x=1");
    } else if (name == "submit_id_crlf") {
      CHECK(j["request_id"].get<std::string>().find("\r\n") != std::string::npos);
    } else if (name == "submit_id_duplicate") {
      CHECK(j["request_id"] == earlier);
    } else if (name == "submit_empty_object") {
      CHECK(a.status == 200);
      CHECK(a.body == "{}");
    } else {
      FAIL("no expectation for this kind");
    }
    CHECK(tally(*p, name) == 1);
  }
}

TEST_CASE("each download fault kind, forced, cuts, trickles, bloats or hides the video") {
  Bench b;
  const std::string mp4(sim::sample_mp4());
  for (const auto& kind : faultproxy::fault_kinds()) {
    if (kind.scope != faultproxy::Scope::download) continue;
    CAPTURE(kind.name);
    auto p = proxy_for(b, kind.name);
    std::string url = p->base_url() + "/outputs/" + b.done_id + ".mp4";
    std::string name = kind.name;
    Answer a = call(url);
    if (name == "download_trickle") {  // 4 bytes every 0.5 s for 1 s, then the close
      CHECK(a.code == CURLE_PARTIAL_FILE);
      CHECK(a.body.size() >= 4);
      CHECK(a.body.size() <= 12);
      CHECK(a.body == mp4.substr(0, a.body.size()));
    } else if (name == "download_truncated") {
      CHECK(a.code == CURLE_PARTIAL_FILE);
      CHECK(a.body == mp4.substr(0, mp4.size() / 2));
    } else if (name == "download_huge_500") {
      CHECK(a.status == 500);
      CHECK(a.body.size() >= (20u << 20));
    } else if (name == "download_404_once") {
      CHECK(a.status == 404);
      Answer again = call(url);
      CHECK(again.status == 200);
      CHECK(again.body == mp4);
    } else {
      FAIL("no expectation for this kind");
    }
    CHECK(tally(*p, name) == 1);
  }
}
