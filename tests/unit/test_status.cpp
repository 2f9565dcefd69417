// `wanbatch status` as strings: the bar, the ETA's waves, money, JSON keys, colour.
#include <doctest/doctest.h>

#include <cmath>

#include "daemon/status.h"
#include "jobs/credits.h"
#include "jobs/json_safe.h"
#include "jobs/revision.h"
#include "jobs/util.h"

using namespace wb;

namespace {

constexpr int64_t kNow = 1'800'000'000'000;

Shot make_shot(const std::string& batch, int index, ShotState state, std::optional<double> cost = std::nullopt) {
  Shot s;
  s.batch = batch;
  s.index = index;
  s.spec.id = "s" + std::to_string(index);
  s.spec.duration = 5;
  s.spec.resolution = "720P";
  s.state = state;
  s.cost = cost;
  if (state != ShotState::pending) {
    s.request_id = "req" + std::to_string(index);
    s.submitted_ms = kNow - 10'000;
  }
  return s;
}

BatchRecord make_batch(const std::string& name, int64_t created_ms = kNow - 60'000) {
  BatchRecord b;
  b.name = name;
  b.created_ms = created_ms;
  return b;
}

StatusSnapshot running_snapshot() {
  StatusSnapshot snap;
  snap.daemon_running = true;
  snap.max_in_flight = 8;
  snap.submits_per_minute = 20;
  snap.now_ms = kNow;
  return snap;
}

double class_mean(const RenderModel& m, const std::string& res = "720P", int d = 5) {
  return m.dist({res, d}).mean();
}

std::vector<EtaJob> pending_jobs(const std::string& batch, int n) {
  return std::vector<EtaJob>(static_cast<size_t>(n), EtaJob{batch, {"720P", 5}, ShotState::pending, 0});
}

}  // namespace

TEST_CASE("status: the bar shares its cells among done, failed or held, in flight and pending") {
  BatchStatus b;
  b.done = 10, b.failed_or_held = 1, b.in_flight = 4, b.pending = 5;
  CHECK(progress_bar(b, 20, false) == "[##########!>>>>.....]");
  // A part with shots keeps at least one cell, however small its share.
  b.done = 97, b.failed_or_held = 1, b.in_flight = 0, b.pending = 2;
  CHECK(progress_bar(b, 20, false) == "[##################!.]");
  b = {};
  CHECK(progress_bar(b, 10, false) == "[..........]");
  // Colour: each part its own, reset at the end.
  b.done = 1, b.pending = 1;
  std::string coloured = progress_bar(b, 2, true);
  CHECK(coloured == "[\x1b[32m#\x1b[2m.\x1b[0m]");
}

TEST_CASE("status: pending shots run in waves of the in-flight cap, each its class's mean render time") {
  RenderModel model;
  model.set_prior_seconds(100);
  const double mean = class_mean(model);
  REQUIRE(mean > 50);
  auto ends = expected_ends(pending_jobs("b", 4), model, 2, 60000);
  CHECK(ends["b"] == doctest::Approx(2 * mean).epsilon(0.01));  // two waves of two
  ends = expected_ends(pending_jobs("b", 4), model, 4, 60000);
  CHECK(ends["b"] == doctest::Approx(mean).epsilon(0.01));  // one wave
  ends = expected_ends(pending_jobs("b", 5), model, 2, 60000);
  CHECK(ends["b"] == doctest::Approx(3 * mean).epsilon(0.01));  // a third wave of one
}

TEST_CASE("status: a job at the provider holds its slot for its expected remaining time") {
  RenderModel model;
  model.set_prior_seconds(100);
  const RenderDist dist = model.dist({"720P", 5});
  std::vector<EtaJob> jobs = {{"b", {"720P", 5}, ShotState::in_flight, 60}, {"b", {"720P", 5}, ShotState::pending, 0}};
  auto ends = expected_ends(jobs, model, 1, 60000);
  CHECK(ends["b"] == doctest::Approx(dist.mean_residual(60) + dist.mean()).epsilon(0.01));
  // More at the provider than the cap (a lowered cap): the next submit waits for the count to drop under it.
  jobs = {{"b", {"720P", 5}, ShotState::in_flight, 0}, {"b", {"720P", 5}, ShotState::in_flight, 90},
          {"c", {"720P", 5}, ShotState::pending, 0}};
  ends = expected_ends(jobs, model, 1, 60000);
  CHECK(ends["c"] == doctest::Approx(dist.mean_residual(0) + dist.mean()).epsilon(0.01));
}

TEST_CASE("status: the submit rate spaces the starts of pending shots") {
  RenderModel model;
  model.set_prior_seconds(100);
  auto ends = expected_ends(pending_jobs("b", 3), model, 10, 1);  // one a minute
  CHECK(ends["b"] == doctest::Approx(120 + class_mean(model)).epsilon(0.01));
}

TEST_CASE("status: the ETA follows the learned render times, not the prior") {
  RenderModel model;
  for (int i = 0; i < 30; ++i) model.observe({"720P", 5}, 40 + (i % 5));
  auto ends = expected_ends(pending_jobs("b", 1), model, 8, 60000);
  CHECK(ends["b"] == doctest::Approx(42).epsilon(0.1));
  // A class never seen borrows from its learned neighbour, scaled by the priors: 1080P is 2.25x.
  std::vector<EtaJob> big = {{"b", {"1080P", 5}, ShotState::pending, 0}};
  CHECK(expected_ends(big, model, 8, 60000)["b"] == doctest::Approx(42 * 2.25).epsilon(0.1));
}

TEST_CASE("status: a batch's progress, exact credits, ETA and waiting reasons, in JSON with today's keys") {
  StatusSnapshot snap = running_snapshot();
  std::vector<Shot> shots = {make_shot("lake", 0, ShotState::done, 0.1), make_shot("lake", 1, ShotState::done, 0.2),
                             make_shot("lake", 2, ShotState::done, 0.3), make_shot("lake", 3, ShotState::in_flight),
                             make_shot("lake", 4, ShotState::pending)};
  shots[4].reason = "waiting: in-flight cap";
  snap.batches.push_back({make_batch("lake"), shots});
  PricingConfig pricing;
  StatusView v = summarize(snap, pricing, 138);
  REQUIRE(v.batches.size() == 1);
  const BatchStatus& b = v.batches[0];
  CHECK(b.progress == doctest::Approx(0.6));
  CHECK(b.done == 3);
  CHECK(b.in_flight == 1);
  CHECK(b.pending == 1);
  CHECK(b.spent == 600'000);  // 0.1 + 0.2 + 0.3, no float noise
  CostModel costs(pricing);
  CHECK(b.remaining_estimate == 2 * costs.estimate(shots[3].spec));
  REQUIRE(b.eta_ms);
  CHECK(*b.eta_ms > kNow);
  CHECK(b.waiting == std::map<std::string, int>{{"waiting: in-flight cap", 1}});

  std::string text = json_text(overview_json(v));
  CHECK_MESSAGE(text.find("\"credits_spent\":0.6") != std::string::npos, text);
  auto j = nlohmann::json::parse(text);
  const auto& jb = j["batches"][0];
  CHECK(jb["batch"] == "lake");
  CHECK(jb["shots"] == 5);
  CHECK(jb["states"] == nlohmann::json{{"DONE", 3}, {"IN_FLIGHT", 1}, {"PENDING", 1}});
  CHECK(jb["progress"] == doctest::Approx(0.6));
  CHECK(to_micro(jb["credits_remaining_estimate"].get<double>()) == b.remaining_estimate);
  CHECK(jb["eta"] == iso8601_utc(from_epoch_ms(*b.eta_ms)));
  CHECK(jb["eta"].get<std::string>().back() == 'Z');
  CHECK(jb["waiting"] == nlohmann::json{{"waiting: in-flight cap", 1}});
  CHECK(j["daemon"]["in_flight"] == 1);
}

TEST_CASE("status: no ETA when nothing can move or nothing is left") {
  std::vector<Shot> shots = {make_shot("lake", 0, ShotState::pending), make_shot("lake", 1, ShotState::pending)};
  StatusSnapshot snap = running_snapshot();
  snap.daemon_running = false;
  snap.batches.push_back({make_batch("lake"), shots});
  PricingConfig pricing;
  auto b = summarize(snap, pricing, 138).batches[0];
  CHECK_FALSE(b.eta_ms);
  CHECK(b.no_eta == "daemon not running");
  CHECK(batch_json(b)["eta"].is_null());

  snap.daemon_running = true;
  snap.paused = true;
  CHECK(summarize(snap, pricing, 138).batches[0].no_eta == "submits paused");

  snap.paused = false;
  snap.batches[0].first.budget_credits = 0.01;  // does not cover two shots
  b = summarize(snap, pricing, 138).batches[0];
  CHECK_FALSE(b.eta_ms);
  CHECK(b.no_eta == "the batch budget does not cover the rest");

  snap.batches[0].first.budget_credits.reset();
  CHECK(summarize(snap, pricing, 138).batches[0].eta_ms);

  snap.batches[0].second = {make_shot("lake", 0, ShotState::done, 0.5), make_shot("lake", 1, ShotState::held)};
  b = summarize(snap, pricing, 138).batches[0];
  CHECK(b.progress == 1.0);
  CHECK_FALSE(b.eta_ms);
  CHECK(b.remaining_estimate == 0);  // a HELD shot waits for a person, not for money
}

TEST_CASE("status: a higher-priority batch goes first and its ETA comes sooner") {
  StatusSnapshot snap = running_snapshot();
  snap.max_in_flight = 1;
  snap.submits_per_minute = 60000;
  std::vector<Shot> a, b;
  for (int i = 0; i < 3; ++i) a.push_back(make_shot("old", i, ShotState::pending));
  for (int i = 0; i < 3; ++i) b.push_back(make_shot("urgent", i, ShotState::pending));
  BatchRecord urgent = make_batch("urgent", kNow);
  urgent.priority = 5;
  snap.batches.push_back({make_batch("old"), a});
  snap.batches.push_back({urgent, b});
  auto v = summarize(snap, PricingConfig{}, 100);
  REQUIRE(v.batches[0].eta_ms);
  REQUIRE(v.batches[1].eta_ms);
  CHECK(*v.batches[1].eta_ms < *v.batches[0].eta_ms);
  // Three waves each, one after the other: the old batch ends at twice the urgent one.
  CHECK(static_cast<double>(*v.batches[0].eta_ms - kNow) ==
        doctest::Approx(2.0 * static_cast<double>(*v.batches[1].eta_ms - kNow)).epsilon(0.01));
}

TEST_CASE("status: the overview is one line per batch, then reasons and the shots that need a person") {
  StatusSnapshot snap = running_snapshot();
  std::vector<Shot> shots = {make_shot("lake", 0, ShotState::done, 0.25), make_shot("lake", 1, ShotState::held),
                             make_shot("lake", 2, ShotState::pending)};
  shots[1].reason = "ambiguous submit: look in the dashboard";
  snap.submit_wait = "waiting: in-flight cap (limits.max_in_flight 8)";
  snap.batches.push_back({make_batch("lake"), shots});
  StatusView v = summarize(snap, PricingConfig{}, 138);
  std::string text = overview_text(v, TextStyle{});
  CHECK_MESSAGE(text.find("lake [") == 0, text);
  auto first_line = text.substr(0, text.find('\n'));
  for (const char* part : {"] 66%", "1/3 done, 1 held, 1 pending", "credits 0.25 spent, ~", "ETA ", "(in ",
                           "cap 8, 20/min"})
    CHECK_MESSAGE(first_line.find(part) != std::string::npos, part << " in " << first_line);
  CHECK(text.find("\n  1 shot(s) waiting: in-flight cap (limits.max_in_flight 8)\n") != std::string::npos);
  CHECK(text.find("\n  s1 HELD: ambiguous submit: look in the dashboard\n") != std::string::npos);
  CHECK(text.find("daemon: running, 0 of 8 in flight") != std::string::npos);
  CHECK(text.find('\x1b') == std::string::npos);  // no colour unless asked

  std::string coloured = overview_text(v, TextStyle{true, 0});
  CHECK(coloured.find("\x1b[32m#") != std::string::npos);
  CHECK(coloured.find("\x1b[31m!") != std::string::npos);

  // Fitted to a narrow terminal: no line wraps, the bar's colour stays whole.
  std::string narrow = overview_text(v, TextStyle{true, 30});
  std::string plain_narrow = overview_text(v, TextStyle{false, 30});
  for (size_t at = 0, end; (end = plain_narrow.find('\n', at)) != std::string::npos; at = end + 1)
    CHECK(end - at <= 30);
  CHECK(narrow.find("\x1b[0m]") != std::string::npos);

  // At most N shots needing a person per batch, then where to see the rest.
  std::vector<Shot> many;
  for (int i = 0; i < 5; ++i) many.push_back(make_shot("lake", i, ShotState::failed));
  snap.batches[0].second = many;
  std::string capped = overview_text(summarize(snap, PricingConfig{}, 138), TextStyle{}, 2);
  CHECK(capped.find("... and 3 more: wanbatch status lake") != std::string::npos);
}

TEST_CASE("status BATCH: a row per shot with state, age, take, request_id and reason") {
  BatchRecord rec = make_batch("lake");
  std::vector<Shot> shots = {make_shot("lake", 0, ShotState::done, 0.1), make_shot("lake", 1, ShotState::pending)};
  shots[1].reason = "waiting: paused by an operator";
  auto rows = shot_rows(rec, shots, kNow);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].age_ms == 10'000);  // since submitted
  CHECK(rows[1].age_ms == 60'000);  // not submitted: since its batch arrived
  CHECK(rows[0].take == 1);
  StatusSnapshot snap = running_snapshot();
  snap.batches.push_back({rec, shots});
  StatusView v = summarize(snap, PricingConfig{}, 138);
  std::string text = batch_text(v, v.batches[0], rows, TextStyle{});
  CHECK(text.find("SHOT  STATE    AGE     TAKE  REQUEST_ID  REASON\n") != std::string::npos);
  CHECK_MESSAGE(text.find("\ns0    DONE     10s     1     req0\n") != std::string::npos, text);
  CHECK(text.find("\ns1    PENDING  1m      1     -           waiting: paused by an operator\n") != std::string::npos);
  auto j = shot_rows_json(rows);
  CHECK(j[0] == nlohmann::json{{"id", "s0"}, {"state", "DONE"}, {"age_seconds", 10}, {"reason", ""},
                               {"request_id", "req0"}, {"take", 1}, {"changes", nlohmann::json::array()},
                               {"removed", false}, {"stuck", false}, {"take_queued", nullptr}});
}

TEST_CASE("status: a stuck job is counted on its batch's line, listed for a person, and marked in its row") {
  BatchRecord rec = make_batch("lake");
  std::vector<Shot> shots = {make_shot("lake", 0, ShotState::in_flight), make_shot("lake", 1, ShotState::in_flight)};
  shots[0].request_id = "req0";
  shots[0].stuck_request_id = "req0";
  shots[0].reason = "stuck: in flight for 41 min, over 15 min";
  shots[1].request_id = "req1";
  shots[1].stuck_request_id = "older-take";  // a take announced before: this one is not
  StatusSnapshot snap = running_snapshot();
  snap.batches.push_back({rec, shots});
  StatusView v = summarize(snap, PricingConfig{}, 138);
  REQUIRE(v.batches.size() == 1);
  CHECK(v.batches[0].stuck == 1);
  CHECK(batch_json(v.batches[0])["stuck"] == 1);
  CHECK(v.batches[0].waiting.empty());  // a stuck job does not wait: it needs a look
  std::string text = overview_text(v, TextStyle{});
  CHECK_MESSAGE(text.find("2 in flight (1 stuck)") != std::string::npos, text);
  CHECK(text.find("  s0 IN_FLIGHT (stuck): stuck: in flight for 41 min") != std::string::npos);
  auto rows = shot_rows(rec, shots, kNow);
  CHECK(rows[0].stuck);
  CHECK_FALSE(rows[1].stuck);
  CHECK(batch_text(v, v.batches[0], rows, TextStyle{}).find("IN_FLIGHT (stuck)") != std::string::npos);
  CHECK(shot_rows_json(rows)[0]["stuck"] == true);
}

TEST_CASE("status: short durations read as people write them") {
  CHECK(short_duration(0) == "0s");
  CHECK(short_duration(59'000) == "59s");
  CHECK(short_duration(61'000) == "2m");
  CHECK(short_duration(3'600'000 + 5 * 60'000) == "1h05m");
  CHECK(short_duration(26 * 3'600'000LL) == "1d02h");
}

TEST_CASE("status: ~to go counts a revision's next take queued behind a take on the provider, credits and time") {
  StatusSnapshot snap = running_snapshot();
  std::vector<Shot> shots = {make_shot("lake", 0, ShotState::in_flight), make_shot("lake", 1, ShotState::fetching, 0.5)};
  ShotSpec next0 = shots[0].spec;  // take 2 of s0: a longer 1080P take
  next0.duration = 10;
  next0.resolution = "1080P";
  shots[0].next_take = next_take_json(next0, {}, {"duration", "resolution"});
  shots[1].next_take = next_take_json(shots[1].spec, {}, {"prompt"});  // its cost is known; take 2's is not
  snap.batches.push_back({make_batch("lake"), shots});
  PricingConfig pricing;
  CostModel costs(pricing);
  StatusView v = summarize(snap, pricing, 100);
  REQUIRE(v.batches.size() == 1);
  const BatchStatus& b = v.batches[0];
  CHECK(b.takes_queued == 2);
  // s0: its running take and its next take; s1: its next take (its running take's cost is known).
  const Micro expected = costs.estimate(shots[0].spec) + costs.estimate(next0) + costs.estimate(shots[1].spec);
  CHECK(b.remaining_estimate == expected);
  CHECK(to_micro(batch_json(b)["credits_remaining_estimate"].get<double>()) == expected);
  CHECK(overview_text(v, {}).find("~" + credits_text(expected) + " to go") != std::string::npos);
  // Time: the next takes render after the takes on the provider, in the same slots.
  RenderModel model;
  model.set_prior_seconds(100);
  const double elapsed = 10;
  const double s0_end = model.dist({"720P", 5}).mean_residual(elapsed) + class_mean(model, "1080P", 10);
  REQUIRE(b.eta_ms);
  CHECK(static_cast<double>(*b.eta_ms - kNow) / 1000 == doctest::Approx(s0_end).epsilon(0.01));
  std::vector<EtaJob> jobs = {{"b", {"720P", 5}, ShotState::in_flight, 60, RenderClass{"720P", 5}},
                              {"b", {"720P", 5}, ShotState::downloading, 0, RenderClass{"720P", 5}}};
  auto ends = expected_ends(jobs, model, 8, 60000);
  CHECK(ends["b"] == doctest::Approx(model.dist({"720P", 5}).mean_residual(60) + class_mean(model)).epsilon(0.01));
  jobs = {{"b", {"720P", 5}, ShotState::pending, 0, RenderClass{"720P", 5}}};
  CHECK(expected_ends(jobs, model, 8, 60000)["b"] == doctest::Approx(2 * class_mean(model)).epsilon(0.01));
}
