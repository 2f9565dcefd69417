// The simulator in-process, driven through the real CurlTransport: these tests
// check the simulator against SEGMIND_API.md and the transport against a real
// socket (including a connection dropped after a submit was accepted).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <nlohmann/json.hpp>
#include <algorithm>
#include <optional>

#include "jobs/curl_transport.h"
#include "jobs/mp4.h"
#include "jobs/segmind.h"
#include "tests/sim/simulator.h"
#include "tests/support.h"

using namespace wb;
using nlohmann::json;

namespace {

json good_body() { return {{"prompt", "wind"}, {"image", "https://cdn/a.png"}, {"duration", 5}, {"resolution", "720P"}}; }

struct Client {
  CurlTransport transport{true};
  std::string base;
  std::string key = "k";

  // Runs one request to completion on this client's transport.
  HttpResponse run(const HttpRequest& r) {
    std::optional<HttpResponse> out;
    transport.start(r, [&](HttpResponse resp) { out = std::move(resp); });
    for (int i = 0; i < 1000 && !out; ++i) transport.perform(Millis(10), {});
    REQUIRE(out);
    return *out;
  }

  HttpResponse call(const std::string& method, const std::string& path, const std::string& body = "",
                    std::vector<std::string> headers = {}, ConnectionUse use = ConnectionUse::may_reuse) {
    HttpRequest r;
    r.method = method;
    r.url = path.rfind("http", 0) == 0 ? path : base + path;
    r.body = body;
    r.connection = use;
    r.headers = headers;
    if (!key.empty()) r.headers.push_back("x-api-key: " + key);
    return run(r);
  }
  // Submits a job, waits (scaled time) until it completes, returns its output URL.
  std::string finished_output() {
    auto a = classify_submit(submit(good_body()));
    REQUIRE(a.verdict == Verdict::ok);
    for (int i = 0; i < 500; ++i) {
      auto res = classify_result(call("GET", "/v2/requests/" + a.request_id));
      if (res.verdict == Verdict::ok) return res.output_url;
      ::usleep(2000);
    }
    FAIL("job " << a.request_id << " never completed");
    return "";
  }

  HttpResponse submit(const json& body) {
    return call("POST", "/v2/wan2.7-i2v", body.dump(), {"Content-Type: application/json"}, ConnectionUse::fresh);
  }
};


int ledger_lines(const std::string& path) {
  std::string text = test::read(path);
  return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
}

}  // namespace

TEST_CASE("a job goes QUEUED -> PROCESSING -> COMPLETED on scaled time, and its output is a real MP4") {
  sim::Options o;
  o.workers = 1;
  o.time_scale = 0.001;  // 138 s -> 0.138 s
  o.ledger_path = test::cwd() + "/ledger.jsonl";
  sim::Simulator s(o);
  s.start(0);
  Client c{.base = s.base_url()};
  auto a = classify_submit(c.submit(good_body()));
  auto b = classify_submit(c.submit(good_body()));
  REQUIRE(a.verdict == Verdict::ok);
  REQUIRE(b.verdict == Verdict::ok);
  CHECK(classify_status(c.call("GET", "/v2/requests/" + b.request_id + "/status")).status == "QUEUED");
  CHECK(classify_status(c.call("GET", "/v2/requests/" + a.request_id + "/status")).status == "PROCESSING");
  ::usleep(300000);
  auto st = classify_status(c.call("GET", "/v2/requests/" + a.request_id + "/status"));
  CHECK(st.status == "COMPLETED");
  auto res = classify_result(c.call("GET", "/v2/requests/" + a.request_id));
  REQUIRE(res.verdict == Verdict::ok);
  CHECK(res.cost == doctest::Approx(0.5));
  auto video = c.call("GET", res.output_url);
  CHECK(video.status == 200);
  auto check = check_mp4_bytes(video.body);
  CHECK(check.ok);
  CHECK(check.has_audio);
  CHECK(ledger_lines(o.ledger_path) == 2);
  CHECK(s.stats().credits == doctest::Approx(1000 - 0.5 - 0.5));
}

TEST_CASE("output files honour Range requests") {
  sim::Options o;
  o.time_scale = 0.0001;
  sim::Simulator s(o);
  s.start(0);
  Client c{.base = s.base_url()};
  std::string output = c.finished_output();
  auto part = c.call("GET", output, "", {"Range: bytes=10-19"});
  CHECK(part.status == 206);
  CHECK(part.body == std::string(sim::sample_mp4().substr(10, 10)));
  CHECK(part.header("content-range") == "bytes 10-19/" + std::to_string(sim::sample_mp4().size()));
  CHECK(c.call("GET", output, "", {"Range: bytes=999999-"}).status == 416);
}

TEST_CASE("every output shape is served and understood") {
  for (std::string shape : {"string", "video", "video_url"}) {
    sim::Options o;
    o.time_scale = 0.0001;
    o.output_shape = shape;
    sim::Simulator s(o);
    s.start(0);
    Client c{.base = s.base_url()};
    auto a = classify_submit(c.submit(good_body()));
    ::usleep(50000);
    auto raw = c.call("GET", "/v2/requests/" + a.request_id);
    auto j = json::parse(raw.body);
    CHECK((shape == "string" ? j["output"].is_string() : j["output"].is_object()));
    CHECK(classify_result(raw).output_url.find("/outputs/") != std::string::npos);
  }
}

TEST_CASE("errors: 401, 405 as HTML, 406 as text, 400, 404 for unknown ids and models") {
  sim::Options o;
  o.api_key = "right";
  sim::Simulator s(o);
  s.start(0);
  Client c{.base = s.base_url(), .key = "wrong"};
  CHECK(classify_submit(c.submit(good_body())).verdict == Verdict::auth);
  c.key = "right";
  auto get = c.call("GET", "/v2/wan2.7-i2v");
  CHECK(get.status == 405);
  CHECK(get.header("content-type") == "text/html");
  auto ct = c.call("POST", "/v2/wan2.7-i2v", good_body().dump(), {"Content-Type: text/plain"});
  CHECK(ct.status == 406);
  CHECK(ct.body == "Invalid content type");
  CHECK(classify_submit(ct).verdict == Verdict::bug);
  json bad = good_body();
  bad["duration"] = 20;
  CHECK(classify_submit(c.submit(bad)).verdict == Verdict::rejected);
  CHECK(classify_status(c.call("GET", "/v2/requests/nope/status")).verdict == Verdict::not_found);
  auto model = c.call("POST", "/v2/other-model", "{}", {"Content-Type: application/json"});
  CHECK(model.status == 404);
}

TEST_CASE("rate limit answers 429 with the reset header") {
  sim::Options o;
  o.rate_limit = 2;
  o.rate_window_seconds = 60;
  sim::Simulator s(o);
  s.start(0);
  Client c{.base = s.base_url()};
  CHECK(classify_submit(c.submit(good_body())).verdict == Verdict::ok);
  CHECK(classify_submit(c.submit(good_body())).verdict == Verdict::ok);
  auto r = c.submit(good_body());
  CHECK(r.status == 429);
  auto a = classify_submit(r);
  CHECK(a.verdict == Verdict::rate_limited);
  REQUIRE(a.reset_at);
  CHECK(*a.reset_at > std::chrono::system_clock::now());
  CHECK(s.stats().rate_limited == 1);
}

TEST_CASE("credits: below the job's cost answers 406 Insufficient credits until topped up") {
  sim::Options o;
  o.credits = 0.4;  // a 5 s 720P job costs 0.5
  sim::Simulator s(o);
  s.start(0);
  Client c{.base = s.base_url()};
  auto r = c.submit(good_body());
  CHECK(r.status == 406);
  CHECK(classify_submit(r).verdict == Verdict::credits);
  CHECK(json::parse(c.call("GET", "/v1/get-user-credits").body)["credits"] == doctest::Approx(0.4));
  c.call("POST", "/sim/credits", R"({"add": 10})", {"Content-Type: application/json"});
  CHECK(classify_submit(c.submit(good_body())).verdict == Verdict::ok);
}

TEST_CASE("FAILED jobs answer 422 with an error and are not charged") {
  sim::Options o;
  o.fail_rate = 1;
  o.time_scale = 0.0001;
  sim::Simulator s(o);
  s.start(0);
  Client c{.base = s.base_url()};
  auto a = classify_submit(c.submit(good_body()));
  ::usleep(50000);
  auto r = c.call("GET", "/v2/requests/" + a.request_id);
  CHECK(r.status == 422);
  CHECK(classify_result(r).verdict == Verdict::failed);
  CHECK(s.stats().credits == doctest::Approx(1000));
}

TEST_CASE("records expire: every poll then answers 404") {
  sim::Options o;
  o.time_scale = 0.0001;
  o.expiry_seconds = 100;  // 10 ms real
  sim::Simulator s(o);
  s.start(0);
  Client c{.base = s.base_url()};
  auto a = classify_submit(c.submit(good_body()));
  ::usleep(100000);
  CHECK(classify_status(c.call("GET", "/v2/requests/" + a.request_id + "/status")).verdict == Verdict::not_found);
}

TEST_CASE("a dropped answer after an accepted submit is 'outcome unknown', sent once, billed once") {
  sim::Options o;
  o.drop_rate = 1;
  o.ledger_path = test::cwd() + "/ledger.jsonl";
  sim::Simulator s(o);
  s.start(0);
  Client c{.base = s.base_url()};
  // Warm a reusable connection first, so a re-send on a dead reused connection
  // would be possible if the submit did not insist on a fresh one.
  c.call("GET", "/v1/get-user-credits");
  auto r = c.submit(good_body());
  CHECK(r.error == NetError::unknown_outcome);
  CHECK(classify_submit(r).verdict == Verdict::ambiguous);
  CHECK(ledger_lines(o.ledger_path) == 1);
  CHECK(s.stats().submits_accepted == 1);
}

TEST_CASE("a refused connection is 'not sent', so a submit may be retried") {
  Client c{.base = "http://127.0.0.1:1"};
  auto r = c.submit(good_body());
  CHECK(r.error == NetError::not_sent);
  CHECK(classify_submit(r).verdict == Verdict::retry);
}

TEST_CASE("the transport refuses plain http to other hosts and caps unannounced bodies") {
  CurlTransport strict(false);
  std::optional<HttpResponse> out;
  HttpRequest r;
  r.url = "http://127.0.0.1:1/x";
  strict.start(r, [&](HttpResponse resp) { out = resp; });
  CHECK_FALSE(out);  // never answered inside start()
  strict.perform(Millis(0), {});
  REQUIRE(out);
  CHECK(out->error == NetError::refused_url);

  sim::Options o;
  o.time_scale = 0.0001;
  sim::Simulator s(o);
  s.start(0);
  Client c{.base = s.base_url()};
  HttpRequest dl;
  dl.url = c.finished_output();
  dl.max_body_bytes = 100;
  out = c.run(dl);
  REQUIRE(out);
  CHECK(out->error == NetError::too_large);
}

TEST_CASE("uploads return reusable URLs that serve the asset") {
  sim::Options o;
  sim::Simulator s(o);
  s.start(0);
  Client c{.base = s.base_url()};
  auto up = classify_upload(c.call("POST", "/upload-asset", upload_body("image/png", test::png()),
                                   {"Content-Type: application/json"}));
  REQUIRE(up.verdict == Verdict::ok);
  CHECK(c.call("GET", up.url).status == 200);
}

TEST_CASE("the transport resumes a download with Range and appends the rest") {
  sim::Options o;
  o.time_scale = 0.0001;
  sim::Simulator s(o);
  s.start(0);
  Client c{.base = s.base_url()};
  std::string video(sim::sample_mp4());
  int fd = ::open("part", O_RDWR | O_CREAT | O_TRUNC, 0644);
  REQUIRE(::write(fd, video.data(), 100) == 100);
  HttpRequest dl;
  dl.url = c.finished_output();
  dl.sink_fd = fd;
  dl.resume_from = 100;
  std::optional<HttpResponse> out = c.run(dl);
  ::close(fd);
  REQUIRE(out);
  CHECK(out->status == 206);
  CHECK(test::read("part") == video);
}

TEST_CASE("a reused connection handle carries nothing of the request before it") {
  // The transport keeps finished easy handles for the next request: a GET after
  // a POST must be a GET, a plain download after a Range one must be whole.
  sim::Options o;
  o.time_scale = 0.0001;
  sim::Simulator s(o);
  s.start(0);
  Client c{.base = s.base_url()};
  const std::string output = c.finished_output();  // a POST, then GETs, on the same transport
  std::string video(sim::sample_mp4());
  HttpRequest ranged;
  ranged.url = output;
  ranged.resume_from = 100;
  ranged.headers = {"X-Extra: 1"};
  ranged.max_body_bytes = 1 << 20;
  std::optional<HttpResponse> part = c.run(ranged);
  REQUIRE(part);
  CHECK(part->status == 206);
  CHECK(part->body.size() == video.size() - 100);
  for (int i = 0; i < 3; ++i) {
    HttpRequest whole;
    whole.url = output;
    whole.max_body_bytes = 1 << 20;
    std::optional<HttpResponse> all = c.run(whole);
    REQUIRE(all);
    CHECK(all->status == 200);
    CHECK(all->body == video);
    auto status = c.call("GET", "/v1/get-user-credits");
    CHECK(status.status == 200);
  }
}

TEST_CASE("slow downloads from the API's own host never hold back an API call") {
  // 40 downloads trickle from the host the API calls go to: a status poll and a
  // submit still go out and are answered at once.
  sim::Options o;
  o.time_scale = 0.0001;
  o.trickle_bytes_per_second = 200;  // each download takes minutes
  sim::Simulator s(o);
  s.start(0);
  Client c{.base = s.base_url()};
  const std::string output = c.finished_output();
  int answered = 0;
  for (int i = 0; i < 40; ++i) {
    HttpRequest dl;
    dl.url = output;
    dl.timeout = std::chrono::milliseconds(120000);
    c.transport.start(dl, [&](HttpResponse) { ++answered; });
  }
  for (int i = 0; i < 20; ++i) c.transport.perform(Millis(5), {});
  auto start = std::chrono::steady_clock::now();
  auto credits = c.call("GET", "/v1/get-user-credits");
  CHECK(credits.status == 200);
  auto submitted = c.submit(good_body());
  CHECK(submitted.status == 200);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  CHECK(answered == 0);  // the downloads were still on the wire
}

TEST_CASE("a download onto a full disk is reported as a local write failure") {
  sim::Options o;
  o.time_scale = 0.0001;
  sim::Simulator s(o);
  s.start(0);
  Client c{.base = s.base_url()};
  int fd = ::open("/dev/full", O_WRONLY);  // every write answers ENOSPC
  REQUIRE(fd >= 0);
  HttpRequest dl;
  dl.url = c.finished_output();
  dl.sink_fd = fd;
  std::optional<HttpResponse> out = c.run(dl);
  ::close(fd);
  REQUIRE(out);
  CHECK(out->error == NetError::local_write);
  CHECK(out->error_text.find("No space left") != std::string::npos);
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

TEST_CASE("a 500 with a 50 MB body keeps at most the cap of it and is an ordinary answer, API call or download") {
  sim::Options o;
  o.time_scale = 0.0001;
  o.output_error_bytes = 50ll << 20;
  sim::Simulator s(o);
  s.start(0);
  Client c{.base = s.base_url()};
  std::string url = c.finished_output();

  HttpRequest api;  // an API call's shape: max_body_bytes 16 MiB, body in memory
  api.url = url;
  HttpResponse a = c.run(api);
  CHECK(a.error == NetError::none);
  CHECK(a.status == 500);
  CHECK(a.body.size() == static_cast<size_t>(kMaxErrorBodyBytes));
  CHECK(a.body_bytes == kMaxErrorBodyBytes);

  int fd = ::open("part", O_RDWR | O_CREAT | O_TRUNC, 0644);
  HttpRequest dl;  // a download's shape: a sink and a 2 GiB cap
  dl.url = url;
  dl.sink_fd = fd;
  dl.max_body_bytes = 2ll << 30;
  HttpResponse d = c.run(dl);
  ::close(fd);
  CHECK(d.error == NetError::none);
  CHECK(d.status == 500);
  CHECK(d.body.size() == static_cast<size_t>(kMaxErrorBodyBytes));
  CHECK(test::read("part").empty());  // an error page never goes to the video file

  // The cut connection is not reused half-read: the next call is answered normally.
  CHECK(c.call("GET", "/v1/get-user-credits").status == 200);
}

TEST_CASE("a download trickling under the minimum speed is cut after the stall time, as a transfer cut short") {
  sim::Options o;
  o.time_scale = 0.0001;
  o.trickle_bytes_per_second = 4;
  sim::Simulator s(o);
  s.start(0);
  Client c{.base = s.base_url()};
  int fd = ::open("part", O_RDWR | O_CREAT | O_TRUNC, 0644);
  HttpRequest dl;
  dl.url = c.finished_output();
  dl.sink_fd = fd;
  dl.min_bytes_per_second = 16384;
  dl.stall_time = Millis(1000);
  dl.deadline_expected_bytes = 256ll << 20;
  auto started = std::chrono::steady_clock::now();
  HttpResponse r = c.run(dl);
  double took = seconds_since(started);
  ::close(fd);
  CHECK(r.error == NetError::unknown_outcome);
  CHECK(r.error_text.find("too slow") != std::string::npos);
  CHECK(took >= 0.9);
  CHECK(took < 1 + 2.5);  // the stall time and libcurl's once-a-second check
  // What trickled in stays for a Range resume.
  std::string part = test::read("part");
  CHECK_FALSE(part.empty());
  CHECK(part == std::string(sim::sample_mp4().substr(0, part.size())));
}

TEST_CASE("an unannounced body that outlasts its size-scaled deadline is cut at the deadline") {
  // 100 bytes/s is above the 50 bytes/s floor, so only the deadline can stop it:
  // 0.5 s connect + 1 s stall + 50 assumed bytes / 50 bytes/s = 2.5 s.
  sim::HttpServer server([](const sim::Request&) {
    sim::Response r;
    r.content_type = "video/mp4";
    r.body.assign(100000, 'v');
    r.trickle_bytes_per_second = 100;
    r.announce_length = false;
    return r;
  });
  server.start(0);
  Client c{.base = "http://127.0.0.1:" + std::to_string(server.port())};
  int fd = ::open("part", O_RDWR | O_CREAT | O_TRUNC, 0644);
  HttpRequest dl;
  dl.url = c.base + "/v.mp4";
  dl.sink_fd = fd;
  dl.connect_timeout = Millis(500);
  dl.timeout = Millis(0);
  dl.min_bytes_per_second = 50;
  dl.stall_time = Millis(1000);
  dl.deadline_expected_bytes = 50;
  auto started = std::chrono::steady_clock::now();
  HttpResponse r = c.run(dl);
  double took = seconds_since(started);
  ::close(fd);
  CHECK(r.error == NetError::unknown_outcome);
  CHECK(r.error_text.find("deadline") != std::string::npos);
  CHECK(took >= 2.4);
  CHECK(took < 2.5 + 0.5);
  CHECK(test::read("part").size() >= 100);
}

TEST_CASE("the size-scaled deadline takes the announced length, else the assumed size, never past max_body_bytes") {
  HttpRequest r;
  r.connect_timeout = Millis(15000);
  r.stall_time = Millis(30000);
  r.min_bytes_per_second = 16384;
  r.deadline_expected_bytes = 256ll << 20;
  r.max_body_bytes = 2ll << 30;
  CHECK(transfer_deadline(r, -1) == Millis(45000 + 16384 * 1000));         // 256 MiB assumed
  CHECK(transfer_deadline(r, 32ll << 20) == Millis(45000 + 2048 * 1000));  // 32 MiB announced
  CHECK(transfer_deadline(r, 0) == Millis(45000));
  CHECK(transfer_deadline(r, 1ll << 62) == Millis(45000 + 131072ll * 1000));  // a lying length
  r.min_bytes_per_second = 3;
  CHECK(transfer_deadline(r, 10) == Millis(45000 + 3333));
}

TEST_CASE("render time by class: x duration/5 and x2.25 at 1080P, only with render_by_class") {
  sim::Options o;
  CHECK(sim::render_time(o, 10, "1080P", 1) == doctest::Approx(138));  // today's behaviour
  o.render_by_class = true;
  CHECK(sim::render_time(o, 5, "720P", 1) == doctest::Approx(138));
  CHECK(sim::render_time(o, 10, "720P", 1) == doctest::Approx(276));
  CHECK(sim::render_time(o, 5, "1080P", 1) == doctest::Approx(310.5));
  CHECK(sim::render_time(o, 10, "1080P", 1) == doctest::Approx(621));
  CHECK(sim::render_time(o, 2, "720P", 1) == doctest::Approx(55.2));
}

TEST_CASE("the lognormal spread keeps the class mean, varies per draw and repeats for the same draw") {
  sim::Options o;
  o.render_by_class = true;
  o.render_sigma = 0.3;
  double sum = 0, lo = 1e9, hi = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    double t = sim::render_time(o, 10, "720P", static_cast<uint64_t>(i) * 7919 + 1);
    sum += t;
    lo = std::min(lo, t);
    hi = std::max(hi, t);
  }
  CHECK(sum / n == doctest::Approx(276).epsilon(0.02));
  CHECK(lo < 276 * 0.6);
  CHECK(hi > 276 * 1.6);
  CHECK(sim::render_time(o, 10, "720P", 42) == sim::render_time(o, 10, "720P", 42));
  CHECK(sim::render_time(o, 10, "720P", 42) != sim::render_time(o, 10, "720P", 43));
}

TEST_CASE("the heavy tail slows about its share of jobs, by at most its maximum factor") {
  sim::Options o;
  o.render_tail_share = 0.1;
  o.render_tail_max = 4;
  int slow = 0;
  double hi = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    double t = sim::render_time(o, 5, "720P", static_cast<uint64_t>(i) * 104729 + 3);
    CHECK(t >= 138);
    if (t > 138) ++slow;
    hi = std::max(hi, t);
  }
  CHECK(slow == doctest::Approx(n * 0.1).epsilon(0.1));
  CHECK(hi <= 138 * 4);
  CHECK(hi > 138 * 3.5);
}

TEST_CASE("the same seed gives each shot the same render time whatever the submit order") {
  sim::Options o;
  o.render_by_class = true;
  o.render_sigma = 0.25;
  o.render_tail_share = 0.2;
  o.render_tail_max = 3;
  o.workers = 100;
  o.seed = 11;
  o.time_scale = 1;  // nothing finishes during the test
  std::map<std::string, double> first, second;
  for (bool reversed : {false, true}) {
    sim::Simulator s(o);
    s.start(0);
    Client c{.base = s.base_url()};
    for (int k = 0; k < 6; ++k) {
      int i = reversed ? 5 - k : k;
      json body = good_body();
      body["prompt"] = "shot " + std::to_string(i);
      body["duration"] = i % 2 ? 10 : 5;
      body["resolution"] = i % 3 ? "720P" : "1080P";
      REQUIRE(classify_submit(c.submit(body)).verdict == Verdict::ok);
    }
    auto jobs = s.jobs();
    REQUIRE(jobs.size() == 6);
    for (int k = 0; k < 6; ++k) {
      int i = reversed ? 5 - k : k;
      (reversed ? second : first)["shot " + std::to_string(i)] = jobs[static_cast<size_t>(k)].render;
      CHECK(jobs[static_cast<size_t>(k)].resolution == (i % 3 ? "720P" : "1080P"));
    }
  }
  CHECK(first == second);
  CHECK(first["shot 0"] != first["shot 3"]);  // same class, different shots
}

TEST_CASE("/sim/stats counts requests by endpoint, and /sim/jobs tells when a job finished and COMPLETED was first served") {
  sim::Options o;
  o.render_by_class = true;
  o.time_scale = 0.0002;  // 1080P, 10 s: 621 s -> 0.124 s
  sim::Simulator s(o);
  s.start(0);
  Client c{.base = s.base_url()};
  json body = good_body();
  body["duration"] = 10;
  body["resolution"] = "1080P";
  auto a = classify_submit(c.submit(body));
  REQUIRE(a.verdict == Verdict::ok);
  auto before = json::parse(c.call("GET", "/sim/jobs").body)["jobs"][0];
  CHECK(before["first_completed"].is_null());
  CHECK(before["last_download"].is_null());
  int polls = 0;
  std::string state;
  while (state != "COMPLETED" && polls < 1000) {
    state = classify_status(c.call("GET", "/v2/requests/" + a.request_id + "/status")).status;
    ++polls;
    if (state != "COMPLETED") ::usleep(5000);
  }
  REQUIRE(state == "COMPLETED");
  auto raw = c.call("GET", "/v2/requests/" + a.request_id);
  auto res = classify_result(raw);
  REQUIRE(res.verdict == Verdict::ok);
  json metrics = json::parse(raw.body)["metrics"];
  CHECK(metrics["inference_time"].get<double>() == doctest::Approx(621 * 0.0002));  // in the client's seconds
  CHECK(metrics["queue_time"].get<double>() == 0);  // a free worker took it at once
  CHECK(metrics["total_time"].get<double>() == doctest::Approx(621 * 0.0002).epsilon(0.01));
  CHECK(c.call("GET", res.output_url).status == 200);
  CHECK(c.call("GET", "/v1/get-user-credits").status == 200);
  CHECK(c.call("GET", "/assets/none.png").status == 404);
  CHECK(c.call("POST", "/upload-asset", "{}", {"Content-Type: application/json"}).status == 400);

  auto stats = json::parse(c.call("GET", "/sim/stats").body);
  json expected = {{"submit", 1}, {"status", polls}, {"result", 1}, {"upload", 1},
                   {"download", 1}, {"credits", 1}, {"other", 1}};
  CHECK(stats["endpoints"] == expected);
  CHECK(stats["requests"] == polls + 6);

  auto view = json::parse(c.call("GET", "/sim/jobs").body);
  REQUIRE(view["jobs"].size() == 1);
  json j = view["jobs"][0];
  CHECK(j["id"] == a.request_id);
  CHECK(j["class"] == "1080P/10s");
  CHECK(j["render"].get<double>() == doctest::Approx(621));
  CHECK(j["finish"].get<double>() - j["start"].get<double>() == doctest::Approx(621));
  double finish = j["finish"].get<double>(), seen = j["first_completed"].get<double>();
  CHECK(seen >= finish);
  CHECK(j["last_download"].get<double>() >= seen);
  CHECK(view["now"].get<double>() >= j["last_download"].get<double>());
  CHECK(j["requests"] == json{{"status", polls}, {"result", 1}, {"download", 1}});
}

TEST_CASE("libcurl's timers drive a transfer with no socket activity: a silent server times out while perform waits long") {
  // A listener that never accepts: the kernel completes the handshake, the request
  // is sent, nothing ever answers. Only libcurl's timeout can end the transfer, so
  // perform() must wake for it, not sleep its whole max_wait.
  int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(l >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(l, 8) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  CurlTransport t(true);
  HttpRequest r;
  r.url = "http://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/v2/requests/x/status";
  r.timeout = Millis(300);
  std::optional<HttpResponse> out;
  t.start(r, [&](HttpResponse resp) { out = std::move(resp); });
  auto started = std::chrono::steady_clock::now();
  int turns = 0;
  while (!out && turns < 20) {
    t.perform(Millis(5000), {});
    ++turns;
  }
  double took = seconds_since(started);
  ::close(l);
  REQUIRE(out);
  CHECK(out->error == NetError::unknown_outcome);
  CHECK(took < 2.0);
  CHECK(turns < 20);
  CHECK(t.active() == 0);
}

TEST_CASE("hundreds of transfers at once are each answered once, on connections kept for reuse") {
  sim::Options o;
  o.time_scale = 0.0001;
  sim::Simulator s(o);
  s.start(0);
  CurlTransport t(true);
  constexpr int kTransfers = 300;
  std::vector<int> answers(kTransfers, 0);
  std::vector<long> statuses(kTransfers, 0);
  for (int i = 0; i < kTransfers; ++i) {
    HttpRequest r;
    r.url = s.base_url() + "/v2/requests/unknown-" + std::to_string(i) + "/status";
    r.headers.push_back("x-api-key: k");
    t.start(r, [&answers, &statuses, i](HttpResponse resp) {
      ++answers[i];
      statuses[i] = resp.status;
    });
  }
  auto started = std::chrono::steady_clock::now();
  while (t.active() > 0 && seconds_since(started) < 30) t.perform(Millis(1000), {});
  CHECK(t.active() == 0);
  CHECK(std::count(answers.begin(), answers.end(), 1) == kTransfers);
  CHECK(std::count(statuses.begin(), statuses.end(), 404) == kTransfers);
  // And the transport goes on: one more on the connections kept.
  std::optional<HttpResponse> last;
  HttpRequest r;
  r.url = s.base_url() + "/v2/requests/unknown-last/status";
  r.headers.push_back("x-api-key: k");
  t.start(r, [&](HttpResponse resp) { last = std::move(resp); });
  while (!last && seconds_since(started) < 40) t.perform(Millis(1000), {});
  REQUIRE(last);
  CHECK(last->status == 404);
}

namespace {
// A file server on 127.0.0.1: /file honours Range, /moved redirects to it,
// /whole ignores Range (a 200 with the whole file).
struct FileServer {
  std::string data;
  sim::HttpServer server{[this](const sim::Request& req) {
    sim::Response r;
    r.content_type = "video/mp4";
    if (req.path == "/fat-moved") {  // a redirect with a megabyte of body, trickled
      r.status = 302;
      r.headers.emplace_back("Location", "/file");
      r.body.assign(1 << 20, 'x');
      r.trickle_bytes_per_second = 256 << 10;
      return r;
    }
    if (req.path == "/nowhere") {
      r.status = 302;
      r.body = "moved, but not said where";
      return r;
    }
    if (req.path == "/moved") {
      r.status = 302;
      r.headers.emplace_back("Location", "/file");
      r.body = "moved";
      return r;
    }
    std::string range = req.header("range");
    if (req.path == "/file" && range.rfind("bytes=", 0) == 0) {
      size_t from = std::stoull(range.substr(6));
      if (from >= data.size()) {
        r.status = 416;
        r.headers.emplace_back("Content-Range", "bytes */" + std::to_string(data.size()));
        return r;
      }
      r.status = 206;
      r.headers.emplace_back("Content-Range", "bytes " + std::to_string(from) + "-" + std::to_string(data.size() - 1) +
                                                  "/" + std::to_string(data.size()));
      r.body = data.substr(from);
      return r;
    }
    if (req.path == "/len") {  // a 200 ignoring the Range, as long as the Range's start
      r.body = data.substr(0, len_body);
      return r;
    }
    r.body = data;
    return r;
  }};
  size_t len_body = 0;
  explicit FileServer(std::string d) : data(std::move(d)) { server.start(0); }
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(server.port()) + path; }
};

// Resumes a download of `path` onto the file "part" holding `had`, as the downloader does.
HttpResponse resume_onto(const FileServer& files, const std::string& path, const std::string& had) {
  test::write("part", had);
  int fd = ::open("part", O_RDWR | O_APPEND);
  REQUIRE(fd >= 0);
  HttpRequest dl;
  dl.url = files.url(path);
  dl.sink_fd = fd;
  dl.resume_from = static_cast<long long>(had.size());
  Client c;
  HttpResponse r = c.run(dl);
  ::close(fd);
  return r;
}
}  // namespace

TEST_CASE("a resumed download that is redirected keeps its Range and the bytes it had") {
  FileServer files(std::string(sim::sample_mp4()));
  const size_t half = files.data.size() / 2;
  test::write("part", files.data.substr(0, half));
  int fd = ::open("part", O_RDWR | O_APPEND);
  REQUIRE(fd >= 0);
  HttpRequest dl;
  dl.url = files.url("/moved");
  dl.sink_fd = fd;
  dl.resume_from = static_cast<long long>(half);
  dl.max_redirects = 5;
  Client c;
  HttpResponse r = c.run(dl);
  ::close(fd);
  CHECK(r.error == NetError::none);
  CHECK(r.status == 206);
  CHECK(test::read("part") == files.data);
}

TEST_CASE("a server that ignores Range gets the download started over, not failed") {
  FileServer files(std::string(sim::sample_mp4()));
  HttpResponse r = resume_onto(files, "/whole", "stale bytes of another try");
  CHECK(r.error == NetError::none);
  CHECK(r.status == 200);
  CHECK(test::read("part") == files.data);
}

TEST_CASE("a 200 to a Range request as long as the bytes already there starts over, never keeps the old bytes") {
  // Outside attack (e2c71ed): libcurl calls such an answer "already downloaded"
  // (no error, no body read), and the stale .part was checked as the download.
  FileServer files(std::string(sim::sample_mp4()));
  files.len_body = 26;
  HttpResponse r = resume_onto(files, "/len", "stale bytes of another try");
  CHECK(r.error == NetError::none);
  CHECK(r.status == 200);
  CHECK(r.body_bytes == 26);
  CHECK(test::read("part") == files.data.substr(0, 26));
}

TEST_CASE("a redirect's own body is read no further than an error page's, then the redirect is followed") {
  // Outside attack (c2d4760): a 302 with an endless body was read for hours (only
  // the download's deadline bounded it), holding a download slot.
  FileServer files(std::string(sim::sample_mp4()));
  HttpRequest dl;
  dl.url = files.url("/fat-moved");
  dl.max_redirects = 5;
  auto started = std::chrono::steady_clock::now();
  Client c;
  HttpResponse r = c.run(dl);
  CHECK(seconds_since(started) < 2.0);  // the whole megabyte takes 4 s
  CHECK(r.error == NetError::none);
  CHECK(r.status == 200);
  CHECK(r.body == files.data);
}

TEST_CASE("a redirect that names no Location says so") {
  FileServer files(std::string(sim::sample_mp4()));
  HttpRequest dl;
  dl.url = files.url("/nowhere");
  dl.max_redirects = 5;
  Client c;
  HttpResponse r = c.run(dl);
  CHECK(r.error == NetError::refused_url);
  CHECK(r.error_text == "a redirect without a usable Location");
}
