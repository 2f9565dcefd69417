#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "jobs/segmind.h"

using namespace wb;

namespace {
HttpResponse answer(long status, const std::string& body, std::map<std::string, std::string> headers = {}) {
  HttpResponse r;
  r.status = status;
  r.body = body;
  r.headers = std::move(headers);
  return r;
}
HttpResponse net(NetError e) {
  HttpResponse r;
  r.error = e;
  r.error_text = "boom";
  return r;
}
}  // namespace

TEST_CASE("submit answers: only a 200 with a request_id is accepted") {
  auto ok = classify_submit(answer(200, R"({"request_id":"r-1","status_url":"u","response_url":"v","status":"QUEUED"})"));
  CHECK(ok.verdict == Verdict::ok);
  CHECK(ok.request_id == "r-1");
  CHECK(classify_submit(answer(200, R"({"status":"QUEUED"})")).verdict == Verdict::ambiguous);
  CHECK(classify_submit(answer(200, "not json")).verdict == Verdict::ambiguous);
}

TEST_CASE("submit failures: not sent retries, sent-and-unanswered is ambiguous") {
  CHECK(classify_submit(net(NetError::not_sent)).verdict == Verdict::retry);
  CHECK(classify_submit(net(NetError::unknown_outcome)).verdict == Verdict::ambiguous);
  CHECK(classify_submit(net(NetError::too_large)).verdict == Verdict::ambiguous);
  CHECK(classify_submit(net(NetError::refused_url)).verdict == Verdict::bug);
}

TEST_CASE("submit HTTP errors map to one action each") {
  CHECK(classify_submit(answer(400, R"({"error":"duration must be 2-15"})")).verdict == Verdict::rejected);
  CHECK(classify_submit(answer(400, R"({"error":"duration must be 2-15"})")).message == "HTTP 400: duration must be 2-15");
  CHECK(classify_submit(answer(401, R"({"error":"Invalid API key"})")).verdict == Verdict::auth);
  CHECK(classify_submit(answer(403, R"({"error":"no"})")).verdict == Verdict::auth);
  CHECK(classify_submit(answer(404, R"({"error":"Model not found"})")).verdict == Verdict::rejected);
  auto html = classify_submit(answer(405, "<!DOCTYPE html><html><body>405</body></html>"));
  CHECK(html.verdict == Verdict::bug);
  CHECK(html.message == "HTTP 405 (an HTML page)");
  auto ct = classify_submit(answer(406, "Invalid content type"));
  CHECK(ct.verdict == Verdict::bug);
  CHECK(ct.message == "HTTP 406: Invalid content type");
  CHECK(classify_submit(answer(406, R"({"error":"Insufficient credits"})")).verdict == Verdict::credits);
  CHECK(classify_submit(answer(406, "Team spend limit reached")).verdict == Verdict::credits);
  CHECK(classify_submit(answer(410, R"({"error":"Model retired"})")).verdict == Verdict::rejected);
  auto rl = classify_submit(answer(429, R"({"error":"Rate limit"})", {{"x-rate-limit-reset-at-utc", "2026-11-24T10:00:05Z"}}));
  CHECK(rl.verdict == Verdict::rate_limited);
  REQUIRE(rl.reset_at);
  CHECK(iso8601_utc(*rl.reset_at) == "2026-11-24T10:00:05.000Z");
  CHECK_FALSE(classify_submit(answer(429, "{}")).reset_at);
  for (long s : {500L, 502L, 504L}) CHECK(classify_submit(answer(s, "")).verdict == Verdict::retry);
}

TEST_CASE("status answers") {
  CHECK(classify_status(answer(200, R"({"status":"QUEUED"})")).status == "QUEUED");
  CHECK(classify_status(answer(200, R"({"status":"PROCESSING"})")).verdict == Verdict::ok);
  CHECK(classify_status(answer(200, R"({"status":"COMPLETED"})")).status == "COMPLETED");
  auto failed = classify_status(answer(422, R"({"status":"FAILED","error":"NSFW content detected","metrics":{"total_time":3}})"));
  CHECK(failed.verdict == Verdict::failed);
  CHECK(failed.message == "NSFW content detected");
  CHECK(classify_status(answer(200, R"({"status":"FAILED"})")).verdict == Verdict::failed);
  CHECK(classify_status(answer(404, R"({"error":"Request abc not found"})")).verdict == Verdict::not_found);
  CHECK(classify_status(answer(500, "oops")).verdict == Verdict::retry);
  CHECK(classify_status(answer(429, "{}")).verdict == Verdict::rate_limited);
  CHECK(classify_status(net(NetError::unknown_outcome)).verdict == Verdict::retry);
  CHECK(classify_status(answer(200, R"({"status":"WEIRD"})")).verdict == Verdict::bug);
}

TEST_CASE("result answers accept every output shape") {
  const char* metrics = R"("metrics":{"cost":0.5,"remaining_credits":99.5,"inference_time":130,"queue_time":8,"total_time":138})";
  for (std::string out : {std::string(R"("https://cdn/x.mp4")"), std::string(R"({"video":{"url":"https://cdn/x.mp4"}})"),
                          std::string(R"({"video_url":"https://cdn/x.mp4"})"), std::string(R"({"video":"https://cdn/x.mp4"})"),
                          std::string(R"(["https://cdn/x.mp4"])")}) {
    auto r = classify_result(answer(200, R"({"status":"COMPLETED","output":)" + out + "," + metrics + "}"));
    CHECK(r.verdict == Verdict::ok);
    CHECK(r.output_url == "https://cdn/x.mp4");
    CHECK(r.cost == doctest::Approx(0.5));
    CHECK(r.remaining_credits == doctest::Approx(99.5));
  }
  CHECK(classify_result(answer(200, R"({"status":"COMPLETED"})")).verdict == Verdict::bug);
  CHECK(classify_result(answer(200, R"({"status":"PROCESSING"})")).verdict == Verdict::retry);
  CHECK(classify_result(answer(422, R"({"status":"FAILED","error":"x"})")).verdict == Verdict::failed);
}

TEST_CASE("upload answers") {
  auto ok = classify_upload(answer(200, R"({"file_urls":["https://images.segmind.com/assets/a.png"],"message":"ok"})"));
  CHECK(ok.verdict == Verdict::ok);
  CHECK(ok.url == "https://images.segmind.com/assets/a.png");
  CHECK(classify_upload(answer(200, R"({"message":"ok"})")).verdict == Verdict::retry);
  CHECK(classify_upload(answer(401, "{}")).verdict == Verdict::auth);
}

TEST_CASE("the submit body carries the API's own field names and uploaded URLs") {
  Shot s;
  s.spec.id = "a";
  s.spec.prompt = "wind";
  s.spec.image.path = "/p/a.png";
  s.image_url = "https://images.segmind.com/assets/a.png";
  s.spec.last_frame.url = "https://cdn/b.png";
  s.spec.duration = 7;
  s.spec.resolution = "1080P";
  s.spec.seed = 42;
  auto j = nlohmann::json::parse(submit_body(s));
  CHECK(j["prompt"] == "wind");
  CHECK(j["image"] == "https://images.segmind.com/assets/a.png");
  CHECK(j["last_frame"] == "https://cdn/b.png");
  CHECK(j["duration"] == 7);
  CHECK(j["resolution"] == "1080P");
  CHECK(j["seed"] == 42);
  CHECK_FALSE(j.contains("audio_url"));
  CHECK_FALSE(j.contains("negative_prompt"));
  auto up = nlohmann::json::parse(upload_body("image/png", "abc"));
  CHECK(up["data_urls"][0] == "data:image/png;base64,YWJj");
}

TEST_CASE("URL rule: https anywhere, http only to loopback when allowed") {
  CHECK(url_allowed("https://api.segmind.com/v2/x", false));
  CHECK_FALSE(url_allowed("http://127.0.0.1:8080/x", false));
  CHECK(url_allowed("http://127.0.0.1:8080/x", true));
  CHECK(url_allowed("http://localhost/x", true));
  CHECK(url_allowed("http://[::1]:9/x", true));
  CHECK_FALSE(url_allowed("http://127.0.0.1.evil.com/x", true));
  CHECK_FALSE(url_allowed("http://127.0.0.1@evil.com/x", true));
  CHECK_FALSE(url_allowed("file:///etc/shadow", true));
  CHECK_FALSE(url_allowed("ftp://x/y", true));
}

TEST_CASE("a 416's Content-Range names the video's length, or nothing usable") {
  CHECK(unsatisfied_range_length("bytes */1234") == 1234);
  CHECK(unsatisfied_range_length("  Bytes */0\t") == 0);
  CHECK(unsatisfied_range_length("bytes */999999999999999999") == 999999999999999999ll);
  CHECK(unsatisfied_range_length("bytes */9999999999999999999") == -1);  // past a long long
  CHECK(unsatisfied_range_length("") == -1);
  CHECK(unsatisfied_range_length("bytes */") == -1);
  CHECK(unsatisfied_range_length("bytes */*") == -1);
  CHECK(unsatisfied_range_length("bytes */-5") == -1);
  CHECK(unsatisfied_range_length("bytes */12 ") == 12);
  CHECK(unsatisfied_range_length("bytes */1 2") == -1);
  CHECK(unsatisfied_range_length("bytes 0-9/10") == -1);
  CHECK(unsatisfied_range_length("items */10") == -1);
}
