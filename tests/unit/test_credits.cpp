// Money where people see it: micro-credits, their text, and the JSON of
// report.json and sidecars, with no float noise (jobs/credits.h).
#include <doctest/doctest.h>

#include <climits>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "jobs/credits.h"
#include "jobs/json_safe.h"
#include "jobs/report.h"

using namespace wb;
using nlohmann::json;

namespace {

Shot shot_costing(const std::string& id, double cost) {
  Shot s;
  s.batch = "b";
  s.spec.id = id;
  s.spec.prompt = "wind";
  s.spec.image.url = "https://cdn.example/a.png";
  s.state = ShotState::done;
  s.request_id = "r-" + id;
  s.cost = cost;
  return s;
}

}  // namespace

TEST_CASE("0.1, 0.2 and 0.3 credits add up to exactly 0.6 in micro-credits") {
  CHECK(0.1 + 0.2 + 0.3 != 0.6);  // the noise this is about
  MicroCredits sum = to_micro(0.1) + to_micro(0.2) + to_micro(0.3);
  CHECK(sum == 600000);
  CHECK(credits_text(sum) == "0.6");
  CHECK(from_micro(sum) == 0.6);
  CHECK(to_micro(0.1 + 0.2 + 0.3) == 600000);
  CHECK(json_text(credits_json(sum)) == "0.6");
}

TEST_CASE("credits_text writes the exact decimal: whole, tiny, negative, large") {
  CHECK(credits_text(0) == "0");
  CHECK(credits_text(1000000) == "1");
  CHECK(credits_text(12000000) == "12");
  CHECK(credits_text(1) == "0.000001");
  CHECK(credits_text(-1) == "-0.000001");
  CHECK(credits_text(-1500000) == "-1.5");
  CHECK(credits_text(100000) == "0.1");
  CHECK(credits_text(1010) == "0.00101");
  CHECK(credits_text(1234567890000) == "1234567.89");
  CHECK(credits_text(kMaxMicroCredits) == "999999999.999999");
  CHECK(credits_text(-kMaxMicroCredits) == "-999999999.999999");
  CHECK(credits_text(INT64_MIN) == "-9223372036854.775808");  // no overflow at the edge
}

TEST_CASE("to_micro rounds to the nearest micro-credit and clamps what no provider sends") {
  CHECK(to_micro(0) == 0);
  CHECK(to_micro(0.45) == 450000);
  CHECK(to_micro(0.0000004) == 0);
  CHECK(to_micro(0.0000006) == 1);
  CHECK(to_micro(-0.0000006) == -1);
  CHECK(to_micro(2.9999999999) == 3000000);
  CHECK(to_micro(std::nan("")) == 0);
  CHECK(to_micro(std::numeric_limits<double>::infinity()) == kMaxMicroCredits);
  CHECK(to_micro(-std::numeric_limits<double>::infinity()) == -kMaxMicroCredits);
  CHECK(to_micro(1e300) == kMaxMicroCredits);
  CHECK(to_micro(-1e300) == -kMaxMicroCredits);
  CHECK(to_micro(from_micro(kMaxMicroCredits)) == kMaxMicroCredits);
}

TEST_CASE("every micro-credit figure is written in JSON as its exact decimal and reads back the same") {
  // nlohmann's own dump() writes 1.999556 as 1.9995559999999999 and 2 as 2.0.
  CHECK(json(from_micro(1999556)).dump() != "1.999556");
  CHECK(json_text(credits_json(1999556)) == "1.999556");
  CHECK(json_text(credits_json(2000000)) == "2");
  CHECK(json_text(credits_json(1)) == "0.000001");
  CHECK(json_text(credits_json(-1)) == "-0.000001");
  CHECK(json_text(credits_json(kMaxMicroCredits)) == "999999999.999999");
  auto same = [](MicroCredits m) {
    std::string text = json_text(credits_json(m));
    return text == credits_text(m) && to_micro(json::parse(text).get<double>()) == m;
  };
  int wrong = 0;
  for (MicroCredits m = -100000; m <= 1000000; ++m) wrong += !same(m);
  std::mt19937_64 rng(8);
  for (int i = 0; i < 100000; ++i)
    wrong += !same(static_cast<MicroCredits>(rng() % static_cast<uint64_t>(kMaxMicroCredits)) * (i % 2 ? 1 : -1));
  CHECK(wrong == 0);
}

TEST_CASE("json_text lays a document out as nlohmann's dump does, floats aside") {
  json doc = {{"batch", "b\n\"q\""}, {"n", 3}, {"neg", -7}, {"ok", true}, {"none", nullptr},
              {"empty_list", json::array()}, {"empty_map", json::object()},
              {"items", {{{"id", "a"}, {"list", {1, 2, {{"x", "y"}}}}}}}};
  CHECK(json_text(doc, 2) == doc.dump(2));
  CHECK(json_text(doc) == doc.dump());
  CHECK(json_text(json{{"t", 138.5}, {"big", 1e300}, {"tiny", 1e-300}}) == R"({"big":1e+300,"t":138.5,"tiny":1e-300})");
  CHECK(json_text(json(std::numeric_limits<double>::quiet_NaN())) == "null");
  CHECK_THROWS(json_text(json("\xff")));  // invalid UTF-8: refused as dump() refuses it
}

TEST_CASE("a report of shots costing 0.1, 0.2 and 0.3 shows a total of exactly 0.6") {
  BatchRecord b;
  b.name = "b";
  std::vector<Shot> shots = {shot_costing("s1", 0.1), shot_costing("s2", 0.2), shot_costing("s3", 0.3)};
  std::string text = batch_report_json(b, shots, 0);
  CHECK_MESSAGE(text.find("\"total_cost\": 0.6\n") != std::string::npos, text);
  CHECK(text.find("0000000") == std::string::npos);
  CHECK(text.find("\"cost\": 0.1,\n") != std::string::npos);
  auto report = json::parse(text);
  CHECK(report["total_cost"].get<double>() == 0.6);
}

TEST_CASE("the report written a shot at a time is laid out as the whole report dumped at once") {
  BatchRecord b;
  b.name = "b";
  b.manifest_name = "b.yaml";
  std::vector<Shot> shots = {shot_costing("s1", 0.1), shot_costing("s2", 0.2), shot_costing("s3", 0.3)};
  shots[1].changes = {"prompt", "seed"};
  shots[1].reason = "a \"quoted\"\nreason";
  shots[2].video_json = R"({"width":96,"differences":["duration 1.00 s, asked 5 s"]})";
  for (const auto& list : {std::vector<Shot>{}, std::vector<Shot>{shots[0]}, shots}) {
    std::string text = batch_report_json(b, list, 1700000000000);
    auto parsed = json::parse(text);
    CHECK(parsed["items"].size() == list.size());
    CHECK(parsed["shots"] == list.size());
    CHECK(text == json_text(parsed, 2) + "\n");  // the pieces join as one dump
  }
  BatchReport streamed;
  for (const auto& s : shots) streamed.add(s);
  auto pieces = std::move(streamed).pieces(b, 1700000000000);
  CHECK(pieces.size() == 3);
  std::string joined;
  for (const auto& p : pieces) joined += p;
  CHECK(joined == batch_report_json(b, shots, 1700000000000));
}

TEST_CASE("a sidecar shows a noisy cost and the provider's money metrics as exact decimals") {
  Shot s = shot_costing("s1", 0.1 + 0.2 + 0.3);
  s.metrics_json = R"({"cost":0.6000000000000001,"remaining_credits":9.399999999999999,"inference_time":130.5})";
  std::string text = sidecar_json(s, VideoInfo{}, 0);
  auto first = text.find("\"cost\": 0.6,\n");  // the shot's cost, then metrics.cost
  REQUIRE_MESSAGE(first != std::string::npos, text);
  CHECK(text.find("\"cost\": 0.6,\n", first + 1) != std::string::npos);
  CHECK(text.find("\"remaining_credits\": 9.4\n") != std::string::npos);
  CHECK(text.find("\"inference_time\": 130.5,") != std::string::npos);
  CHECK(text.find("0000000") == std::string::npos);
  CHECK(text.find("9999999") == std::string::npos);
}
