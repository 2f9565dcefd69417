#include <doctest/doctest.h>

#include "config/config.h"
#include "jobs/util.h"
#include "tests/support.h"

using namespace wb;

namespace {
const char* kMinimal =
    "spool: {incoming: /s/in, done: /s/done, failed: /s/failed}\n"
    "state_dir: /var/lib/wanbatch\n"
    "output_root: /out\n"
    "input_roots: [/projects]\n";

std::string error_of(const std::string& text) {
  try {
    parse_config(text, "wb.yaml");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("a minimal config takes the documented defaults") {
  Config c = parse_config(kMinimal, "wb.yaml");
  CHECK(c.api.base_url == "https://api.segmind.com");
  CHECK(c.api.storage_url == "https://workflows-api.segmind.com/upload-asset");
  CHECK(c.api.model == "wan2.7-i2v");
  CHECK(c.api.key_env == "SEGMIND_API_KEY");
  CHECK_FALSE(c.api.allow_loopback_http);
  CHECK(c.spool.active == "/s/active");
  CHECK(c.limits.max_in_flight == 8);
  CHECK(c.limits.download_min_bytes_per_second == 16384);
  CHECK(c.limits.download_stall_seconds == 30);
  CHECK(c.input_roots == std::vector<std::string>{"/projects"});
}

TEST_CASE("the example config in config/ is valid") {
  Config c = load_config(std::string(EXAMPLES_DIR) + "/../config/wanbatch.yaml");
  CHECK(c.api.base_url == "https://api.segmind.com");
}

TEST_CASE("a wrong config names the key") {
  CHECK(error_of(std::string(kMinimal) + "limits: {max_in_flight: 0}\n").find("limits.max_in_flight") != std::string::npos);
  CHECK(error_of(std::string(kMinimal) + "limits: {max_inflight: 3}\n").find("limits.max_inflight: unknown key") != std::string::npos);
  CHECK(error_of(std::string(kMinimal) + "bogus: 1\n").find("bogus: unknown key") != std::string::npos);
  CHECK(error_of("spool: {incoming: /a, done: /b, failed: /c}\noutput_root: /o\ninput_roots: [/p]\n").find("state_dir: is required") != std::string::npos);
  CHECK(error_of(std::string(kMinimal) + "state_dir2: x\n").find("state_dir2") != std::string::npos);
  CHECK(error_of("spool: {incoming: rel, done: /b, failed: /c}\n").find("spool.incoming: must be an absolute path") != std::string::npos);
  CHECK(error_of(std::string(kMinimal) + "poll: {min_interval_seconds: 5, max_interval_seconds: 1}\n").find("poll.max_interval_seconds") != std::string::npos);
  CHECK(error_of(std::string(kMinimal) + "limits: {download_min_bytes_per_second: 0}\n").find("limits.download_min_bytes_per_second: must be between 1 and") != std::string::npos);
  CHECK(error_of(std::string(kMinimal) + "limits: {download_min_bytes_per_second: fast}\n").find("limits.download_min_bytes_per_second: must be an integer") != std::string::npos);
  CHECK(error_of(std::string(kMinimal) + "limits: {download_stall_seconds: 0}\n").find("limits.download_stall_seconds: must be between 1 and 3600") != std::string::npos);
  CHECK(error_of(std::string(kMinimal) + "limits: {download_stall_seconds: 2.5}\n").find("limits.download_stall_seconds: must be an integer") != std::string::npos);
  CHECK(error_of(std::string(kMinimal) + "limits: {download_stall_secs: 5}\n").find("limits.download_stall_secs: unknown key") != std::string::npos);
  Config c = parse_config(std::string(kMinimal) + "limits: {download_min_bytes_per_second: 1000, download_stall_seconds: 5}\n", "wb.yaml");
  CHECK(c.limits.download_min_bytes_per_second == 1000);
  CHECK(c.limits.download_stall_seconds == 5);
}

TEST_CASE("plain http is refused unless it is loopback and allowed") {
  CHECK(error_of(std::string(kMinimal) + "api: {base_url: http://127.0.0.1:1}\n").find("api.base_url") != std::string::npos);
  CHECK(error_of(std::string(kMinimal) + "api: {base_url: http://evil.example, allow_loopback_http: true}\n").find("api.base_url") != std::string::npos);
  // One URL rule at start, the transport's: lookalike hosts and userinfo are refused.
  for (const char* url : {"http://127.0.0.1.evil.com", "http://127.0.0.1@evil.com", "https://user@host",
                          "http://localhost.evil.com:80", "https://host name", "http://127.0.0.1:80x",
                          "https://", "https://.evil", "http://[::1].evil.com"}) {
    CAPTURE(url);
    CHECK(error_of(std::string(kMinimal) + "api: {base_url: '" + url + "', allow_loopback_http: true}\n")
              .find("api.base_url") != std::string::npos);
  }
  Config c = parse_config(std::string(kMinimal) +
                              "api: {base_url: 'http://127.0.0.1:8080', storage_url: 'http://127.0.0.1:8080/upload-asset', allow_loopback_http: true}\n",
                          "wb.yaml");
  CHECK(c.api.base_url == "http://127.0.0.1:8080");
}

TEST_CASE("metrics.listen: 127.0.0.1:9464 by default, an IP address and port, empty turns it off, else refused") {
  CHECK(parse_config(kMinimal, "wb.yaml").metrics_listen == "127.0.0.1:9464");
  for (const char* ok : {"0.0.0.0:9464", "127.0.0.1:0", "10.1.2.3:65535"})
    CHECK(parse_config(std::string(kMinimal) + "metrics: {listen: \"" + ok + "\"}\n", "wb.yaml").metrics_listen == ok);
  CHECK(parse_config(std::string(kMinimal) + "metrics: {listen: \"\"}\n", "wb.yaml").metrics_listen.empty());
  CHECK(parse_config(std::string(kMinimal) + "metrics: {listen: }\n", "wb.yaml").metrics_listen.empty());
  for (const char* bad : {"9464", ":9464", "localhost:9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536",
                          "127.0.0.1:-1", "256.0.0.1:9464", "1.2.3:9464", "1.2.3.4.5:9464",
                          "http://127.0.0.1:9464", "127.0.0.1:94 64", "[::1]:x"}) {
    std::string e = error_of(std::string(kMinimal) + "metrics: {listen: \"" + bad + "\"}\n");
    CHECK_MESSAGE(e.find("wb.yaml:5: metrics.listen: must be HOST:PORT") == 0, bad << " -> " << e);
    CHECK_MESSAGE(e.find(std::string("got '") + bad + "'") != std::string::npos, e);
  }
  // The metrics server (daemon/metrics_http.h) listens on IPv4 only: what it could never bind is refused here,
  // not accepted and then logged as "cannot listen" by a daemon that runs on without metrics.
  for (const char* v6 : {"[::]:0", "[::1]:9464", "[::]:1", "[::1:9464", "[]:9464"}) {
    std::string e = error_of(std::string(kMinimal) + "metrics: {listen: \"" + v6 + "\"}\n");
    CHECK_MESSAGE(e.find("wb.yaml:5: metrics.listen: must be an IPv4 address") == 0, v6 << " -> " << e);
    CHECK_MESSAGE(e.find("cannot listen on IPv6") != std::string::npos, e);
  }
  CHECK(error_of(std::string(kMinimal) + "metrics: {port: 9464}\n").find("metrics.port: unknown key") !=
        std::string::npos);
  CHECK(error_of(std::string(kMinimal) + "metrics: {listen: [1]}\n").find("metrics.listen: must be a string") !=
        std::string::npos);
}

TEST_CASE("poll.stuck_after_seconds: 0 (learned) by default, a number of seconds, checked") {
  CHECK(parse_config(kMinimal, "wb.yaml").poll.stuck_after_seconds == 0);
  CHECK(parse_config(std::string(kMinimal) + "poll: {stuck_after_seconds: 1800}\n", "wb.yaml").poll.stuck_after_seconds == 1800);
  CHECK(error_of(std::string(kMinimal) + "poll: {stuck_after_seconds: -1}\n").find("poll.stuck_after_seconds: must be between") != std::string::npos);
  CHECK(error_of(std::string(kMinimal) + "poll: {stuck_after_seconds: soon}\n").find("poll.stuck_after_seconds") != std::string::npos);
  CHECK(parse_config(std::string(kMinimal) + "notify: {webhooks: [{url: 'https://h.example', events: [shot_stuck]}]}\n", "wb.yaml")
            .notify.webhooks.at(0).events == std::vector<std::string>{"shot_stuck"});
}
