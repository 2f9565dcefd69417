#include "jobs/engine/poll_planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

namespace wb {

namespace {

double secs(int64_t ms) { return static_cast<double>(ms) / 1000.0; }
int64_t millis(double s) { return static_cast<int64_t>(std::ceil(s * 1000.0)); }

// Rebuild a class's plans at 1, 2, 4 ... 256 observations, then every 256.
size_t next_rebuild(size_t built_at) {
  if (built_at >= 256) return built_at + 256;
  size_t n = 1;
  while (n <= built_at) n *= 2;
  return n;
}

}  // namespace

void PollPlanner::set_bounds(const PollConfig& poll) {
  poll_ = poll;
  model_.set_prior_seconds(poll.prior_render_seconds);
  plans_.clear();
}

RenderClass PollPlanner::class_of(const ShotSpec& spec) { return {spec.resolution, spec.duration}; }

const PollPlanner::Plan& PollPlanner::plan_for(const RenderClass& cls, double spread_s) {
  // Start windows in half-octaves of the poll floor: plans are shared, not per job.
  int bucket = 0;
  double q = 0;
  if (spread_s > poll_.min_interval_seconds / 2) {
    bucket = 1 + static_cast<int>(std::lround(2 * std::log2(spread_s / poll_.min_interval_seconds)));
    bucket = std::clamp(bucket, 1, 40);
    q = poll_.min_interval_seconds * std::exp2((bucket - 1) / 2.0);
  }
  Plan& p = plans_[cls.key() + "|" + std::to_string(bucket)];
  // A class with renders of its own is planned on them alone (RenderModel::dist), so
  // its own count decides; before its first, every class's (neighbours shift it). One
  // count for both starved a class that began late: planned on its neighbour while
  // the total crossed 64, then not again before 128 whatever it learned.
  const size_t own = model_.observations(cls);
  const bool stale = own > 0 ? p.built_own == 0 || own >= next_rebuild(p.built_own)
                             : learned_elsewhere_ >= next_rebuild(p.built_elsewhere);
  if (!p.plan || stale) {
    RenderDist dist = model_.dist(cls);
    p.plan = std::make_unique<PollPlan>(dist, q, PollBounds{poll_.target_delay_fraction, poll_.min_interval_seconds,
                                                             poll_.max_interval_seconds});
    p.mean_s = dist.empty() ? RenderModel::prior_median(cls, poll_.prior_render_seconds) : dist.mean();
    p.dist = std::move(dist);
    p.built_own = own;
    p.built_elsewhere = learned_elsewhere_;
  }
  return p;
}

void PollPlanner::submitted(const Shot& shot, int64_t submitted_ms) {
  Job j;
  j.cls = class_of(shot.spec);
  j.submitted_s = j.start_s = j.last_poll_s = j.polled_s = secs(submitted_ms);
  // With a queue seen, a new job waits when every worker is taken.
  auto w = workers();
  if (w && static_cast<int>(jobs_.size()) - queued_count_ >= *w) j.queued = true;
  if (auto old = jobs_.find(shot.key()); old != jobs_.end()) {
    if (old->second.queued) --queued_count_;
    drop_scout(old->first, old->second);
  }
  if (j.queued) ++queued_count_;
  jobs_[shot.key()] = j;
  starts_dirty_ = true;
}

void PollPlanner::seen(const Shot& shot, const std::string& status, int64_t now_ms) {
  auto it = jobs_.find(shot.key());
  if (it == jobs_.end()) return;
  Job& j = it->second;
  const double now = secs(now_ms);
  if (status == "QUEUED") {
    if (!j.queued) {
      j.queued = true;
      ++queued_count_;
      starts_dirty_ = true;
    }
    queue_seen_ = true;
    // The provider's concurrency for us, until a waited job teaches it: the
    // jobs seen rendering while this one waits.
    // Counted at most once per poll floor: with thousands queued, a walk of
    // every job on each QUEUED answer was the planner's largest cost.
    if (now >= rendering_counted_at_ + poll_.min_interval_seconds) {
      rendering_counted_at_ = now;
      int rendering = 0;
      for (const auto& [key, other] : jobs_) rendering += other.started_known && !other.queued;
      most_seen_processing_ = std::max(most_seen_processing_, rendering);
    }
    if (j.queued_since_s <= 0) j.queued_since_s = now;
    j.start_s = now;  // it starts no earlier than now
    j.start_spread_s = 0;
  } else if (status == "PROCESSING" && j.queued && (j.started_known || j.start_exact)) {
    // A provider that flips back and forth: it renders again; the start stays as known.
    j.queued = false;
    --queued_count_;
    starts_dirty_ = true;
  } else if (status == "PROCESSING" && !j.started_known && !j.start_exact) {
    if (j.queued || queue_seen_) {
      // It started since it was last seen waiting; the queue's estimate narrows when.
      double lo = j.last_poll_s;
      if (j.queued && j.expected_start_s > lo && j.expected_start_s < now)
        lo = std::max(lo, j.expected_start_s - 0.05 * expected_render_s(shot.spec));
      j.start_s = lo;
      j.start_spread_s = std::max(0.0, now - lo);
    }
    if (j.queued) {
      j.queued = false;
      --queued_count_;
      starts_dirty_ = true;
    }
    j.started_known = true;
  }
  if (status == "PROCESSING") j.seen_processing = true;
  j.last_poll_s = j.polled_s = now;
}

bool PollPlanner::completed(const Shot& shot, std::optional<double> render_s, std::optional<double> queue_s) {
  auto it = jobs_.find(shot.key());
  RenderClass cls = class_of(shot.spec);
  bool learned = render_s && model_.observe(cls, *render_s);
  if (learned) ++learned_elsewhere_;
  if (completed_classes_.insert(cls.key()).second) {
    // Its class's first completion: the scouting ends, the parked jobs are planned
    // on what it taught (or on the prior again, when it taught nothing).
    for (auto& [key, j] : jobs_)
      if (j.parked && j.cls.key() == cls.key()) {
        j.parked = false;
        moved_.push_back(key);
      }
  }
  if (it != jobs_.end()) {
    if (render_s && queue_s) {
      queue_.observe_completed(it->second.submitted_s, *queue_s, *render_s);
      // Its worker came free at `end` (our clock): with a queue, the oldest of
      // our jobs that had not started by then took it, FIFO. Completions are seen
      // in the order they are polled, not the order they happened: a job given a
      // later worker's free time by an earlier-seen completion started at this
      // one instead. So the free times known so far (this one and those given to
      // jobs not seen since) go to those jobs and the oldest not started, in
      // order: oldest job, earliest free time.
      const double end = it->second.submitted_s + *queue_s + *render_s;
      std::vector<std::pair<double, std::string>> takers;  // submitted, key
      std::vector<double> frees{end};
      Job* next = nullptr;
      std::string next_key;
      if (queue_seen_ || queue_.workers())
        for (auto& [key, j] : jobs_) {
          if (key == it->first || j.submitted_s >= end) continue;
          if (j.start_exact) {
            if (j.start_s > end) {
              takers.push_back({j.submitted_s, key});
              frees.push_back(j.start_s);
            }
            continue;
          }
          if (j.started_known && !j.queued && j.start_s + j.start_spread_s <= end) continue;  // running by then
          if (!next || j.submitted_s < next->submitted_s) {
            next = &j;
            next_key = key;
          }
        }
      if (next) takers.push_back({next->submitted_s, next_key});
      std::sort(takers.begin(), takers.end());
      std::sort(frees.begin(), frees.end());
      for (size_t i = 0; i < takers.size(); ++i) {
        Job& j = jobs_[takers[i].second];
        if (j.start_exact && j.start_s == frees[i]) continue;
        j.start_s = frees[i];
        j.start_spread_s = 0;
        j.start_exact = j.started_known = true;
        j.last_poll_s = std::max(j.polled_s, frees[i]);
        if (j.queued) {
          j.queued = false;
          --queued_count_;
        }
        moved_.push_back(takers[i].second);
      }
    }
    if (it->second.queued) --queued_count_;
    drop_scout(it->first, it->second);
    jobs_.erase(it);
  }
  starts_dirty_ = true;
  return learned;
}

void PollPlanner::forget(const std::string& key) {
  auto it = jobs_.find(key);
  if (it == jobs_.end()) return;
  if (it->second.queued) --queued_count_;
  const Job gone = it->second;
  const bool drawn = drop_scout(key, gone);
  jobs_.erase(it);
  if (gone.scout) hand_on_scout(gone.cls, drawn);
  starts_dirty_ = true;
}

bool PollPlanner::drop_scout(const std::string& key, const Job& j) {
  if (!j.scout) return false;
  Scouting& s = scouting_[j.cls.key()];
  --s.scouts;
  auto d = std::find(s.drawn.begin(), s.drawn.end(), key);
  if (d == s.drawn.end()) return false;
  s.drawn.erase(d);
  return true;
}

void PollPlanner::hand_on_scout(const RenderClass& cls, bool drawn) {
  if (!scouting(cls)) return;
  // Its place goes to the oldest parked job of the class: the scouts stay as
  // many while the class is unknown.
  Job* next = nullptr;
  std::string next_key;
  for (auto& [k, other] : jobs_)
    if (other.parked && other.cls.key() == cls.key() && (!next || other.submitted_s < next->submitted_s)) {
      next = &other;
      next_key = k;
    }
  if (!next) return;
  next->parked = false;
  next->scout = true;
  Scouting& s = scouting_[cls.key()];
  ++s.scouts;
  if (drawn) s.drawn.push_back(next_key);
  moved_.push_back(next_key);
}

bool PollPlanner::scouting(const RenderClass& cls) const {
  return model_.observations(cls) == 0 && !completed_classes_.count(cls.key());
}

bool PollPlanner::parks(const std::string& key, Job& j) {
  if (j.scout || !j.seen_processing) return false;
  if (!scouting(j.cls)) {
    j.parked = false;
    return false;
  }
  if (!j.candidate) {
    // Each rendering job of the class is drawn for once, at its first poll that
    // said PROCESSING: the first half of the scouts are the first seen (the
    // oldest, first to finish when submits are spread out), the other half a
    // uniform sample of every later job (reservoir sampling), so that scouts
    // that all differ from the rest (the heavy shots first in a manifest) are
    // unlikely.
    j.candidate = true;
    Scouting& s = scouting_[j.cls.key()];
    ++s.candidates;
    if (s.scouts < kScoutsPerClass) {
      ++s.scouts;
      j.scout = true;
      if (s.candidates > kScoutsPerClass / 2) s.drawn.push_back(key);
      return false;
    }
    const int pool = std::max(1, s.candidates - kScoutsPerClass / 2);
    const auto r = static_cast<size_t>(std::uniform_int_distribution<int>(0, pool - 1)(rng_));
    if (r < s.drawn.size()) {
      // It replaces a drawn scout, which waits with the others from its next poll.
      if (auto out = jobs_.find(s.drawn[r]); out != jobs_.end()) out->second.scout = false;
      s.drawn[r] = key;
      j.scout = true;
      j.parked = false;
      return false;
    }
  }
  j.parked = true;
  return true;
}

std::optional<int> PollPlanner::workers() const {
  if (auto w = queue_.workers()) return w;
  if (queue_seen_) return std::max(1, most_seen_processing_);
  return std::nullopt;
}

double PollPlanner::expected_render_s(const ShotSpec& spec) { return plan_for(class_of(spec), 0).mean_s; }

void PollPlanner::plan_queue(double now) {
  if (!starts_dirty_ && now < starts_planned_at_ + poll_.min_interval_seconds) return;
  starts_dirty_ = false;
  starts_planned_at_ = now;
  std::vector<double> ends;
  std::vector<std::pair<double, std::string>> waiting;  // submitted, key
  double mean = 0;
  for (auto& [key, j] : jobs_) {
    if (j.queued) {
      waiting.push_back({j.submitted_s, key});
      continue;
    }
    const Plan& p = plan_for(j.cls, 0);
    double ran = std::max(0.0, j.last_poll_s - j.start_s);
    ends.push_back(std::max(now, j.last_poll_s + (p.dist.empty() ? p.mean_s : p.dist.mean_residual(ran))));
  }
  if (waiting.empty()) return;
  std::sort(waiting.begin(), waiting.end());
  for (auto& [s, key] : waiting) mean += plan_for(jobs_[key].cls, 0).mean_s;
  mean /= static_cast<double>(waiting.size());
  auto starts = queue_.expected_starts(now, ends, static_cast<int>(waiting.size()), mean);
  if (!queue_.workers()) {
    // No completed job has shown the provider's concurrency yet: FIFO onto the
    // workers seen busy at once.
    int w = std::max(1, most_seen_processing_);
    std::vector<double> free = ends;
    std::sort(free.begin(), free.end());
    free.resize(static_cast<size_t>(w), now);
    std::sort(free.begin(), free.end());
    starts.clear();
    for (size_t i = 0; i < waiting.size(); ++i) {
      std::pop_heap(free.begin(), free.end(), std::greater<>());
      double s = std::max(now, free.back());
      starts.push_back(s);
      free.back() = s + mean;
      std::push_heap(free.begin(), free.end(), std::greater<>());
    }
  }
  for (size_t i = 0; i < waiting.size() && i < starts.size(); ++i) jobs_[waiting[i].second].expected_start_s = starts[i];
}

PollPlanner::Job& PollPlanner::job_of(const Shot& shot) {
  auto it = jobs_.find(shot.key());
  if (it == jobs_.end()) {
    submitted(shot, shot.followed_since_ms);  // followed without being told: from its submit
    it = jobs_.find(shot.key());
  }
  return it->second;
}

int64_t PollPlanner::next_poll(const Shot& shot, int64_t now_ms, double jitter) {
  Job& j = job_of(shot);
  const double now = secs(now_ms);
  double t;
  if (j.queued) {
    plan_queue(now);
    // Poll where a job that starts at its expected start would first be polled.
    double margin = 0.05 * plan_for(j.cls, 0).mean_s;
    const Plan& p = plan_for(j.cls, 2 * margin);
    if (j.expected_start_s > now) {
      double start = j.expected_start_s - margin;
      t = p.plan->next_poll_at(now, start, start, jitter);
    } else {
      // Its expected start has passed and it still waits: the estimate is
      // stale, so polls back off on how long it has waited (half of it), a
      // handful of polls however long the queue; and never closer than the
      // margin its start is planned with (a twentieth of a render), which a
      // short wait would otherwise bring down to the floor.
      double waited = now - (j.queued_since_s > 0 ? j.queued_since_s : j.submitted_s);
      t = now + std::max({0.5 * waited, margin, poll_.min_interval_seconds}) * (0.95 + 0.1 * jitter);
    }
    t = std::clamp(t, now + poll_.min_interval_seconds, now + poll_.max_interval_seconds);
  } else if (parks(shot.key(), j)) {
    // Waits for its class's scouts: the ceiling, or twice its class's expected
    // render when that is shorter (a ceiling of an hour must not outlast the
    // provider's record), 5% of it jittered off so that parked jobs do not poll
    // in lockstep. (Checks at the expected render itself were tried: a parked job
    // completing early ended the scouting with a low sample, and the jobs planned
    // on it overran: 17 polls a job instead of 10 in the test "a first night of
    // 1,000 jobs".)
    const double wait = std::min(poll_.max_interval_seconds, 2 * plan_for(j.cls, 0).mean_s);
    t = now + std::max(poll_.min_interval_seconds, wait * (1 - 0.05 * jitter));
  } else {
    const Plan& p = plan_for(j.cls, j.start_spread_s);
    t = p.plan->next_poll_at(now, j.start_s, j.last_poll_s, jitter);
  }
  return slotted(millis(std::max(t, now)), now_ms);
}

int64_t PollPlanner::slotted(int64_t at_ms, int64_t now_ms) const {
  const auto slot = static_cast<int64_t>(poll_.min_interval_seconds * 1000 / kSlotsPerMinInterval);
  if (slot <= 1 || at_ms < 0) return at_ms;
  const int64_t up = (at_ms + slot - 1) / slot * slot;
  // Never past the ceiling: a poll planned at it stays where it is.
  return up - now_ms <= static_cast<int64_t>(poll_.max_interval_seconds * 1000) ? up : at_ms;
}

int64_t PollPlanner::first_poll_after_restart(const Shot& shot, int64_t now_ms, double unit) {
  Job& j = job_of(shot);
  // Nothing is known since the restart: as if polled just now, then the
  // first poll somewhere in the gap the policy would leave.
  double last = j.last_poll_s;
  j.last_poll_s = std::max(last, secs(now_ms));
  int64_t next = next_poll(shot, now_ms, 0);
  j.last_poll_s = last;
  return now_ms + static_cast<int64_t>(unit * static_cast<double>(std::max<int64_t>(0, next - now_ms)));
}

std::optional<int64_t> PollPlanner::rendering_since_ms(const Shot& shot) const {
  auto it = jobs_.find(shot.key());
  if (it == jobs_.end() || it->second.queued) return std::nullopt;
  return static_cast<int64_t>(std::floor(it->second.start_s * 1000.0));
}

std::string PollPlanner::describe(const Shot& shot, int64_t now_ms) const {
  auto it = jobs_.find(shot.key());
  if (it == jobs_.end()) return "not followed";
  const Job& j = it->second;
  const double now = secs(now_ms);
  char text[256];
  std::snprintf(text, sizeof text,
                "%s%s, start %+.3f s within %.3f s%s, last seen %+.3f s, expected start %+.3f s, %d waiting",
                j.queued ? "queued" : (j.started_known ? "rendering" : "believed rendering"),
                j.parked ? " (parked until its class's first completion)" : (j.scout ? " (scout)" : ""),
                j.start_s - now, j.start_spread_s, j.start_exact ? " (exact)" : "", j.last_poll_s - now,
                j.expected_start_s - now, queued_count_);
  return text;
}

std::optional<int> PollPlanner::queue_room() {
  auto w = workers();
  if (!w) return std::nullopt;
  double mean = 0;
  int n = 0;
  for (auto& [key, j] : jobs_) {
    mean += plan_for(j.cls, 0).mean_s;
    if (++n >= 16) break;
  }
  if (n == 0) return std::nullopt;
  auto cap = queue_.submit_ahead_cap(mean / n);
  int allowed = cap ? *cap : *w;  // a queue seen, its size not learned yet: one per worker
  return allowed - queued_count_;
}

}  // namespace wb
