// The poll planner (jobs/engine/poll_planner.h), the glue between the learned
// policy and the shots, driven only through its own interface with fake
// monotonic times in milliseconds: bounds on every poll, few polls once a class
// is learned, queued jobs not polled at the floor, restarts spread out.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "jobs/engine/poll_planner.h"

using namespace wb;

namespace {

constexpr int64_t kT0 = 5'000'000;  // ms on the fake monotonic clock

Shot job(const std::string& id, int64_t followed_since_ms = kT0, const std::string& resolution = "720P",
         int duration = 5) {
  Shot s;
  s.batch = "b";
  s.spec.id = id;
  s.spec.resolution = resolution;
  s.spec.duration = duration;
  s.state = ShotState::in_flight;
  s.followed_since_ms = followed_since_ms;
  return s;
}

PollConfig bounds(double min_s, double max_s) {
  PollConfig p;
  p.min_interval_seconds = min_s;
  p.max_interval_seconds = max_s;
  p.target_delay_fraction = 0.03;
  return p;
}

// Render times around 100 s (lognormal, log sigma 0.05).
std::vector<double> renders(int n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::lognormal_distribution<double> d(std::log(100.0), 0.05);
  std::vector<double> out;
  for (int i = 0; i < n; ++i) out.push_back(d(rng));
  return out;
}

void learn(PollPlanner& planner, const std::vector<double>& times) {
  int i = 0;
  for (double r : times) {
    Shot s = job("learn" + std::to_string(i++));
    planner.submitted(s, kT0);
    planner.seen(s, "PROCESSING", kT0 + 1000);
    planner.completed(s, r, 0.2);
  }
}

struct Run {
  int polls = 0;
  double delay_s = 0;
};

// Submits one job at `submit_ms` that renders for `render_s` at once, and polls
// it where the planner says until a poll finds it completed. Checks the bounds
// on every poll.
Run follow(PollPlanner& planner, const std::string& id, int64_t submit_ms, double render_s, const PollConfig& cfg,
           std::mt19937_64& rng) {
  std::uniform_real_distribution<double> unit(0, 1);
  Shot s = job(id, submit_ms);
  planner.submitted(s, submit_ms);
  const int64_t done_ms = submit_ms + static_cast<int64_t>(render_s * 1000);
  const auto min_ms = static_cast<int64_t>(cfg.min_interval_seconds * 1000);
  const auto max_ms = static_cast<int64_t>(cfg.max_interval_seconds * 1000);
  Run run;
  int64_t now = submit_ms;
  while (true) {
    int64_t next = planner.next_poll(s, now, unit(rng));
    REQUIRE(next >= now + min_ms);
    REQUIRE(next <= now + max_ms);
    now = next;
    ++run.polls;
    REQUIRE(run.polls < 10000);
    if (now >= done_ms) break;
    planner.seen(s, "PROCESSING", now);
  }
  run.delay_s = static_cast<double>(now - done_ms) / 1000.0;
  planner.completed(s, render_s, 0.2);
  return run;
}

}  // namespace

TEST_CASE("planner: every poll of a job is at least the floor and at most the ceiling after the last") {
  std::mt19937_64 rng(7);
  // bounds(0.5, 0.5): the jitter added when taking it off would break the floor went
  // past the ceiling (0.525 s; outside attack, session 12).
  for (PollConfig cfg : {bounds(2, 300), bounds(2, 15), bounds(5, 6), bounds(0.5, 1000), bounds(0.5, 0.5)}) {
    CAPTURE(cfg.min_interval_seconds);
    CAPTURE(cfg.max_interval_seconds);
    PollPlanner planner(cfg);
    // The prior alone, then learned; and jobs that overrun what was learned.
    follow(planner, "prior", kT0, 130, cfg, rng);
    learn(planner, renders(30, 1));
    follow(planner, "learned", kT0, 101, cfg, rng);
    follow(planner, "overrun", kT0, 2000, cfg, rng);
    follow(planner, "early", kT0, 3, cfg, rng);
  }
}

TEST_CASE("planner: polls are on slots of min_interval / 40, so jobs planned a few ms apart are polled in one turn") {
  PollConfig cfg = bounds(2, 300);  // slots of 50 ms
  PollPlanner planner(cfg);
  learn(planner, renders(30, 1));
  std::set<int64_t> slots;
  for (int i = 0; i < 20; ++i) {
    // Twenty jobs submitted 3 ms apart, polled with the same jitter.
    const int64_t submit = kT0 + 3 * i;
    Shot s = job("j" + std::to_string(i), submit);
    planner.submitted(s, submit);
    planner.seen(s, "PROCESSING", submit + 2000);
    const int64_t next = planner.next_poll(s, submit + 2000, 0.5);
    CHECK(next % 50 == 0);
    CHECK(next >= submit + 2000 + 2000);  // the floor, never earlier than planned
    slots.insert(next);
  }
  // Spread over 57 ms of plans: two slots at most (one wake-up each), not twenty.
  CHECK(slots.size() <= 3);
  // A poll planned at the ceiling is not rounded past it.
  CHECK(planner.slotted(kT0 + 300'000 + 7, kT0 + 7) == kT0 + 300'000 + 7);
  CHECK(planner.slotted(kT0 + 1'234, kT0) == kT0 + 1'250);
}

TEST_CASE("planner: after learning 30 renders of a class a job costs few polls and is noticed soon") {
  const PollConfig cfg = bounds(2, 300);
  PollPlanner planner(cfg);
  learn(planner, renders(30, 1));
  std::mt19937_64 rng(11);
  const std::vector<double> jobs = renders(200, 2);
  int most = 0;
  double polls = 0, delay = 0, worst = 0;
  int64_t t = kT0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    Run r = follow(planner, "j" + std::to_string(i), t, jobs[i], cfg, rng);
    most = std::max(most, r.polls);
    polls += r.polls;
    delay += r.delay_s;
    worst = std::max(worst, r.delay_s);
    t += 1000;
  }
  polls /= static_cast<double>(jobs.size());
  delay /= static_cast<double>(jobs.size());
  INFO("polls per job: mean " << polls << ", most " << most << "; delay mean " << delay << " s, worst " << worst
                                 << " s");
  CHECK(polls <= 8);
  CHECK(most <= 12);
  // The target is 3% of a 100 s render: 3 s on average.
  CHECK(delay <= 3.0 * 1.2);
  CHECK(worst <= 15);
}

TEST_CASE("planner: a job seen QUEUED behind busy workers is polled for its expected start and end, not at the floor") {
  const PollConfig cfg = bounds(2, 300);
  PollPlanner planner(cfg);
  learn(planner, renders(30, 1));
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> unit(0, 1);

  // Two workers busy with our first two jobs; ten more wait, in submit order,
  // each seen QUEUED before the next is submitted.
  std::vector<Shot> shots;
  for (int i = 0; i < 12; ++i) shots.push_back(job("q" + std::to_string(i), kT0 + i * 100));
  for (int i = 0; i < 12; ++i) {
    planner.submitted(shots[i], kT0 + i * 100);
    planner.seen(shots[i], i < 2 ? "PROCESSING" : "QUEUED", kT0 + i * 100 + 50);
  }
  const int64_t seen_at = kT0 + 1000;
  CHECK(planner.waiting_at_provider() == 10);
  REQUIRE(planner.workers());
  CHECK(*planner.workers() == 2);

  // The last one starts when the fifth round ends, about 500 s later, and
  // renders 100 s: until then every poll finds it QUEUED, then PROCESSING.
  Shot& last = shots[11];
  const int64_t starts_ms = kT0 + 500'000;
  const int64_t done_ms = starts_ms + 100'000;
  int64_t now = seen_at;
  int queued_polls = 0, polls = 0;
  while (true) {
    int64_t next = planner.next_poll(last, now, unit(rng));
    REQUIRE(next >= now + 2000);
    now = next;
    ++polls;
    REQUIRE(polls < 1000);
    if (now >= done_ms) break;
    if (now < starts_ms) ++queued_polls;
    planner.seen(last, now < starts_ms ? "QUEUED" : "PROCESSING", now);
  }
  INFO("polls while queued: " << queued_polls << ", in all: " << polls << ", noticed "
                                 << (now - done_ms) / 1000.0 << " s after it completed");
  // At the floor it would be 250 polls while queued; a plan that ignores the
  // queue (each QUEUED answer as a new start) one every first gap, about six.
  CHECK(queued_polls <= 2);
  CHECK(polls <= 8);
  // And its completion is still noticed soon (the target: 3% of 100 s on average).
  CHECK(now - done_ms <= 10'000);
}

TEST_CASE("planner: after a restart the first polls of 1,000 jobs spread over the gap the policy leaves") {
  const PollConfig cfg = bounds(2, 300);
  PollPlanner planner(cfg);
  const int64_t now = kT0 + 3'600'000;
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> unit(0, 1);

  // What the policy would leave after a poll just now, for a job followed for 60 s.
  PollPlanner probe(cfg);
  Shot p = job("probe", now - 60'000);
  probe.submitted(p, now - 60'000);
  probe.seen(p, "PROCESSING", now);
  const int64_t gap = probe.next_poll(p, now, 0) - now;
  REQUIRE(gap >= 2000);

  std::vector<int64_t> firsts;
  for (int i = 0; i < 1000; ++i) {
    Shot s = job("r" + std::to_string(i), now - 60'000);
    int64_t t = planner.first_poll_after_restart(s, now, unit(rng));
    CHECK(t >= now);
    CHECK(t <= now + gap);
    firsts.push_back(t);
  }
  std::sort(firsts.begin(), firsts.end());
  INFO("gap " << gap << " ms; first polls from +" << firsts.front() - now << " to +" << firsts.back() - now
                 << " ms");
  // Spread over the whole gap: some soon, some near its end, and never many at once.
  CHECK(firsts.front() - now <= 1000);
  CHECK(firsts.back() - now >= gap * 9 / 10);
  const int64_t per_second_max = 1000 * 1000 / gap * 2 + 5;
  size_t lo = 0;
  size_t crowd = 0;
  for (size_t hi = 0; hi < firsts.size(); ++hi) {
    while (firsts[hi] - firsts[lo] >= 1000) ++lo;
    crowd = std::max(crowd, hi - lo + 1);
  }
  CHECK(static_cast<int64_t>(crowd) <= per_second_max);
  const std::set<int64_t> distinct(firsts.begin(), firsts.end());
  CHECK(distinct.size() >= 900);

  // The restart leaves what is known of the job as it was: its next poll after
  // a real answer is placed as for any job.
  Shot s = job("r0", now - 60'000);
  planner.seen(s, "PROCESSING", now + 5000);
  int64_t next = planner.next_poll(s, now + 5000, 0);
  CHECK(next >= now + 5000 + 2000);
  CHECK(next <= now + 5000 + 300'000);
}

// Found by the outside attack on issue 8.
namespace {
Shot planner_shot(const std::string& id) {
  Shot s;
  s.batch = "q";
  s.spec.id = id;
  s.spec.resolution = "1080P";
  s.spec.duration = 10;
  return s;
}
}  // namespace

TEST_CASE("planner: a job QUEUED for an hour past its expected start costs a handful of polls, not one per floor") {
  PollConfig pc;
  pc.min_interval_seconds = 2;
  pc.max_interval_seconds = 15;
  PollPlanner p(pc);
  Shot s = planner_shot("a");
  int64_t now = 1'000'000;
  p.submitted(s, now);
  int polls = 0;
  int64_t t = p.next_poll(s, now, 0.5);
  while (t < now + 3'600'000) {
    ++polls;
    p.seen(s, "QUEUED", t);
    t = p.next_poll(s, t, 0.5);
  }
  CHECK(polls <= 3600 / 15 + 5);  // the ceiling bounds the gap; before: every 2 s (1,800 polls)
  CHECK(polls >= 3600 / 15 - 5);
  PollConfig wide = pc;
  wide.max_interval_seconds = 300;
  PollPlanner q(wide);
  q.submitted(s, now);
  polls = 0;
  t = q.next_poll(s, now, 0.5);
  while (t < now + 3'600'000) {
    ++polls;
    q.seen(s, "QUEUED", t);
    t = q.next_poll(s, t, 0.5);
  }
  CHECK(polls <= 40);  // backs off on the wait
}

TEST_CASE("planner: a job still QUEUED just past its expected start is not polled at the floor") {
  // Found by an outside attack: with a small floor a job seen QUEUED when it was
  // believed to start cost ten polls in the first twentieth of a render (the backoff
  // on half its short wait started at the floor).
  PollConfig pc;
  pc.min_interval_seconds = 0.01;
  pc.max_interval_seconds = 300;
  PollPlanner p(pc);
  Shot s = planner_shot("a");
  const int64_t now = 1'000'000;
  p.submitted(s, now);
  p.seen(s, "QUEUED", now + 10);
  const double mean_ms = 138'000;  // shorter than this class's prior (1080P 10 s)
  int polls = 0;
  for (int64_t t = p.next_poll(s, now + 10, 0.5); t < now + static_cast<int64_t>(0.05 * mean_ms);
       t = p.next_poll(s, t, 0.5)) {
    ++polls;
    p.seen(s, "QUEUED", t);
  }
  CHECK(polls <= 2);
}

TEST_CASE("planner: a provider flipping QUEUED and PROCESSING leaves no job counted as waiting") {
  PollConfig pc;
  PollPlanner p(pc);
  Shot a = planner_shot("a"), b = planner_shot("b");
  p.submitted(a, 1000);
  p.submitted(b, 1000);
  p.seen(a, "PROCESSING", 5000);
  p.seen(b, "QUEUED", 5000);
  CHECK(p.waiting_at_provider() == 1);
  p.seen(b, "PROCESSING", 9000);
  p.seen(b, "QUEUED", 13000);
  p.seen(b, "PROCESSING", 17000);
  CHECK(p.waiting_at_provider() == 0);
}

TEST_CASE("planner: completions seen out of order still give queued jobs their workers' free times in order") {
  PollPlanner planner(bounds(2, 300));
  learn(planner, renders(30, 1));
  Shot a = job("A"), b = job("B"), x = job("X", kT0 + 1000), y = job("Y", kT0 + 2000);
  planner.submitted(a, kT0);
  planner.submitted(b, kT0);
  planner.submitted(x, kT0 + 1000);
  planner.submitted(y, kT0 + 2000);
  planner.seen(a, "PROCESSING", kT0 + 5000);
  planner.seen(b, "PROCESSING", kT0 + 5000);
  planner.seen(x, "QUEUED", kT0 + 5000);
  planner.seen(y, "QUEUED", kT0 + 5000);
  // B's worker came free at 130 s and A's at 100 s, but B's completion is seen first.
  planner.completed(b, 130.0, 0.0);
  CHECK(planner.take_moved_keys() == std::vector<std::string>{"b/X"});
  planner.completed(a, 100.0, 0.0);
  // X, the older, took A's worker at 100 s; Y took B's at 130 s.
  auto keys = planner.take_moved_keys();
  std::sort(keys.begin(), keys.end());
  CHECK(keys == std::vector<std::string>{"b/X", "b/Y"});
  const int64_t now = kT0 + 140'000;
  const int64_t nx = planner.next_poll(x, now, 0), ny = planner.next_poll(y, now, 0);
  CHECK(nx < ny);
  CHECK(ny - nx >= 20'000);  // 30 s apart in start, 20 s apart at least in polls
}

TEST_CASE("planner: a class that starts learning after others have learned much is planned on its own renders") {
  const PollConfig cfg = bounds(2, 300);
  PollPlanner planner(cfg);
  // 70 renders of 720P/10s at 100 s: its neighbour 720P/5s is then expected at 50 s.
  int i = 0;
  for (double r : renders(70, 1)) {
    Shot s = job("ten" + std::to_string(i++), kT0, "720P", 10);
    planner.submitted(s, kT0);
    planner.seen(s, "PROCESSING", kT0 + 1000);
    planner.completed(s, r, 0.2);
  }
  Shot first = job("five-first", kT0, "720P", 5);
  planner.submitted(first, kT0);
  planner.next_poll(first, kT0, 0);  // planned on the neighbour
  planner.forget(first.key());
  // 720P/5s then shows renders of 100 s, not 50.
  for (double r : renders(20, 2)) {
    Shot s = job("five" + std::to_string(i++), kT0, "720P", 5);
    planner.submitted(s, kT0);
    planner.seen(s, "PROCESSING", kT0 + 1000);
    planner.completed(s, r, 0.2);
  }
  // A 100 s job of 720P/5s: a handful of polls, as on its own 20 renders.
  Shot s = job("five-now", kT0, "720P", 5);
  planner.submitted(s, kT0);
  int64_t now = kT0;
  int polls = 0;
  while (now < kT0 + 100'000 && polls < 100) {
    now = planner.next_poll(s, now, 0.5);
    planner.seen(s, "PROCESSING", now);
    ++polls;
  }
  CHECK(polls <= 8);
}

namespace {

// A fleet of jobs of one class, all submitted at kT0, rendering `render_s[i]`
// each, followed as the engine does: each poll where the planner says, a
// completed job's class learns from it, and the jobs it moved are planned again.
struct Fleet {
  double polls_a_job = 0;
  double mean_delay_fraction = 0;  // of each job's render
  double worst_delay_fraction = 0;
  std::vector<double> delay_fraction;  // each job's
};

// Job i is submitted at kT0 + i x submit_step_ms.
Fleet follow_fleet(PollPlanner& planner, const std::vector<double>& render_s, std::mt19937_64& rng,
                   int64_t submit_step_ms = 0) {
  std::uniform_real_distribution<double> unit(0, 1);
  const size_t n = render_s.size();
  std::vector<Shot> shots;
  std::vector<int64_t> due(n);
  std::vector<int> polls(n, 0);
  std::vector<bool> done(n, false);
  std::map<std::string, size_t> index;
  std::vector<int64_t> submit(n);
  for (size_t i = 0; i < n; ++i) {
    submit[i] = kT0 + static_cast<int64_t>(i) * submit_step_ms;
    shots.push_back(job("f" + std::to_string(i), submit[i]));
    index[shots.back().key()] = i;
    planner.submitted(shots[i], submit[i]);
    due[i] = planner.next_poll(shots[i], submit[i], unit(rng));
  }
  Fleet f;
  f.delay_fraction.resize(n);
  size_t left = n;
  while (left > 0) {
    size_t i = 0;
    for (size_t k = 0; k < n; ++k)
      if (!done[k] && (done[i] || due[k] < due[i])) i = k;
    const int64_t now = due[i];
    ++polls[i];
    REQUIRE(polls[i] < 1000);
    const int64_t finish = submit[i] + static_cast<int64_t>(render_s[i] * 1000);
    if (now < finish) {
      planner.seen(shots[i], "PROCESSING", now);
      due[i] = planner.next_poll(shots[i], now, unit(rng));
      continue;
    }
    done[i] = true;
    --left;
    const double delay = static_cast<double>(now - finish) / 1000.0 / render_s[i];
    f.delay_fraction[i] = delay;
    f.mean_delay_fraction += delay / static_cast<double>(n);
    f.worst_delay_fraction = std::max(f.worst_delay_fraction, delay);
    planner.completed(shots[i], render_s[i], 0.0);
    for (const std::string& key : planner.take_moved_keys()) {
      const size_t k = index.at(key);
      if (!done[k]) due[k] = planner.next_poll(shots[k], now, unit(rng));
    }
  }
  for (int p : polls) f.polls_a_job += static_cast<double>(p) / static_cast<double>(n);
  return f;
}

std::vector<double> around(double median_s, double log_sigma, int n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::lognormal_distribution<double> d(std::log(median_s), log_sigma);
  std::vector<double> out;
  for (int i = 0; i < n; ++i) out.push_back(d(rng));
  return out;
}

}  // namespace

TEST_CASE("planner: while a class is unknown, 32 scouts follow it and the others wait at the ceiling") {
  const PollConfig cfg = bounds(2, 300);
  PollPlanner planner(cfg);
  std::vector<Shot> shots;
  for (int i = 0; i < 100; ++i) {
    shots.push_back(job("j" + std::to_string(100 + i)));
    planner.submitted(shots.back(), kT0);
  }
  // The first poll of each is on the prior, scouts or not: a provider queue is
  // seen as soon as without scouts.
  for (auto& s : shots) CHECK(planner.next_poll(s, kT0, 0.5) < kT0 + 100'000);
  const int64_t now = kT0 + 50'000;
  std::vector<std::string> parked;
  for (auto& s : shots) {
    planner.seen(s, "PROCESSING", now);
    const int64_t next = planner.next_poll(s, now, 0.5);
    CHECK(next <= now + 300'000);
    if (next >= now + 285'000)
      parked.push_back(s.key());
    else
      CHECK(next < kT0 + 120'000);  // a scout (or one a later draw replaced), on the prior's plan
  }
  int scouts = 0;
  for (auto& s : shots) {
    const std::string d = planner.describe(s, now);
    scouts += d.find("(scout)") != std::string::npos;
    const bool is_parked = std::find(parked.begin(), parked.end(), s.key()) != parked.end();
    CHECK(is_parked == (d.find("parked") != std::string::npos));
  }
  CHECK(scouts == PollPlanner::kScoutsPerClass);
  // The others: parked, or replaced as drawn scouts by later jobs (parked from their next poll).
  REQUIRE(parked.size() >= 40);
  REQUIRE(parked.size() <= 100 - PollPlanner::kScoutsPerClass);
  CHECK(planner.take_moved_keys().empty());

  SUBCASE("a scout that fails hands its place to a parked job") {
    REQUIRE(planner.describe(shots[0], now).find("(scout)") != std::string::npos);  // the first seen rendering
    planner.forget(shots[0].key());
    auto moved = planner.take_moved_keys();
    REQUIRE(moved.size() == 1);
    CHECK(std::find(parked.begin(), parked.end(), moved[0]) != parked.end());
    for (auto& s : shots)
      if (s.key() == moved[0]) {
        CHECK(planner.next_poll(s, now, 0.5) < kT0 + 120'000);
        CHECK(planner.describe(s, now).find("(scout)") != std::string::npos);
      }
    // Only one place was free: the other parked jobs stay parked.
    for (auto& s : shots)
      if (s.key() != moved[0] && std::find(parked.begin(), parked.end(), s.key()) != parked.end()) {
        planner.seen(s, "PROCESSING", now + 1'000);
        CHECK(planner.next_poll(s, now + 1'000, 0.5) >= now + 1'000 + 285'000);
      }
  }
  SUBCASE("the class's first completion hands every parked job back, planned on what it taught") {
    const int64_t later = kT0 + 140'000;
    planner.completed(shots[0], 138.0, 0.0);
    auto moved = planner.take_moved_keys();
    std::sort(moved.begin(), moved.end());
    CHECK(moved == parked);
    for (auto& s : shots)
      if (s.key() != shots[0].key()) CHECK(planner.next_poll(s, later, 0.5) < later + 30'000);
    CHECK(planner.describe(shots.back(), later).find("parked") == std::string::npos);
  }
  SUBCASE("a completion that teaches nothing (no inference_time) ends the scouting too") {
    planner.completed(shots[0], std::nullopt, std::nullopt);
    CHECK(planner.take_moved_keys().size() == parked.size());
    CHECK(planner.next_poll(shots.back(), now + 1'000, 0.5) < kT0 + 120'000);
  }
}

TEST_CASE("planner: a learned class, or one with 32 jobs or fewer, has no job parked") {
  const PollConfig cfg = bounds(2, 300);
  SUBCASE("learned") {
    PollPlanner planner(cfg);
    learn(planner, renders(3, 1));
    for (int i = 0; i < 100; ++i) {
      Shot s = job("j" + std::to_string(i));
      planner.submitted(s, kT0);
      planner.seen(s, "PROCESSING", kT0 + 50'000);
      CHECK(planner.next_poll(s, kT0 + 50'000, 0.5) < kT0 + 120'000);
    }
  }
  SUBCASE("few") {
    PollPlanner planner(cfg);
    for (int i = 0; i < PollPlanner::kScoutsPerClass; ++i) {
      Shot s = job("j" + std::to_string(i));
      planner.submitted(s, kT0);
      planner.seen(s, "PROCESSING", kT0 + 50'000);
      CHECK(planner.next_poll(s, kT0 + 50'000, 0.5) < kT0 + 120'000);
    }
  }
}

TEST_CASE("planner: a first night of 1,000 jobs of an unknown class costs a few polls a job, not one plan each") {
  // Each job alone on the wide prior: 11 polls a job for identical 138 s renders (as in
  // bench-scale part A), 28.5 for renders twice the prior's median. With scouts the
  // class is learned from its first completion: 2.3 and 9.6.
  const PollConfig cfg = bounds(2, 300);
  std::mt19937_64 rng(11);
  SUBCASE("identical renders") {
    PollPlanner planner(cfg);
    Fleet f = follow_fleet(planner, std::vector<double>(1000, 138.0), rng);
    CHECK(f.polls_a_job < 3.0);
    CHECK(f.mean_delay_fraction <= 0.03);
    CHECK(f.worst_delay_fraction <= 0.06);
  }
  SUBCASE("renders spread (log sigma 0.2) around twice the prior's median") {
    // The jobs that complete before every scout (about 1 in 33) are noticed with the
    // first scout: the price of the scouts, in the mean delay and the worst.
    PollPlanner planner(cfg);
    Fleet f = follow_fleet(planner, around(260.0, 0.2, 1000, 5), rng);
    CHECK(f.polls_a_job < 12.0);
    CHECK(f.mean_delay_fraction <= 0.04);
    CHECK(f.worst_delay_fraction <= 0.5);
  }
}

TEST_CASE("planner: scouts that all render longer than the rest (the heavy shots first) do not hold the rest to the ceiling") {
  // The first 45 submitted render ten times longer; the first seen rendering are
  // those. Scouts that were only the first seen: the other 55 noticed at the
  // ceiling, 150% of their render late (outside attack, session 12).
  const PollConfig cfg = bounds(2, 300);
  std::mt19937_64 rng(3);
  std::vector<double> render(100, 138.0);
  for (int i = 0; i < 45; ++i) render[static_cast<size_t>(i)] = 1380.0;
  PollPlanner planner(cfg);
  Fleet f = follow_fleet(planner, render, rng, 200);
  double normal = 0;
  for (size_t i = 45; i < 100; ++i) normal += f.delay_fraction[i] / 55;
  CHECK(normal <= 0.10);
}

TEST_CASE("planner: a parked job waits at most twice its class's expected render, whatever the ceiling") {
  // A ceiling of an hour must not outlast the provider's record (kept about an hour).
  PollPlanner planner(bounds(2, 3600));
  std::vector<Shot> shots;
  for (int i = 0; i < 40; ++i) {
    shots.push_back(job("j" + std::to_string(100 + i)));
    planner.submitted(shots.back(), kT0);
  }
  const double mean_s = planner.expected_render_s(shots[0].spec);
  const int64_t now = kT0 + 50'000;
  int parked = 0;
  for (auto& s : shots) {
    planner.seen(s, "PROCESSING", now);
    const int64_t next = planner.next_poll(s, now, 0.5);
    CHECK(next <= now + static_cast<int64_t>(2 * mean_s * 1000) + 50);
    parked += next >= now + static_cast<int64_t>(0.95 * 2 * mean_s * 1000);
  }
  CHECK(parked >= 1);
  CHECK(parked <= 40 - PollPlanner::kScoutsPerClass);
}
