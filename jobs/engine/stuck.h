// Stuck jobs: a job in flight far beyond its render time is marked stuck,
// once per take (its request_id), so a person can look at it. Nothing else
// changes: it is never resubmitted, and its polls go on as the planner places
// them (a stuck job that completes is fetched as any other).
//
// Decides: the limit (poll.stuck_after_seconds when set, else twice the 99th
// percentile of the class's render-time distribution: learned, or the prior)
// and when a followed job is past it. Checked at each status poll that says
// the job still runs (QUEUED or PROCESSING), never before the first such poll
// since the start: a job followed again after a restart may have ended while
// the daemon was down, and its first poll says so.
// Marking saves the shot (stuck_request_id, the reason) and emits shot_stuck.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "jobs/engine/core.h"
#include "jobs/engine/render_model.h"
#include "jobs/shot.h"

namespace wb {

// The time in flight past which a job is stuck (seconds): `stuck_after_seconds`
// when > 0, else twice `dist`'s 99th percentile; 0 (never stuck) for an empty
// distribution and no setting.
double stuck_limit_seconds(const RenderDist& dist, double stuck_after_seconds);

// Whether `shot` is stuck: in flight on the take that was marked (as stored).
bool is_stuck(const Shot& shot);
// The same for a shot of the running engine's book, counted only once a status
// poll since this start said the job still runs: a job marked before a restart
// may have ended while the daemon was down (the wanbatch_shots_stuck gauge).
bool is_stuck_now(const Shot& shot);

class StuckWatch {
 public:
  StuckWatch(Core& core, const RenderModel& model) : core_(core), model_(model) {}
  // At a status poll of a followed job (monotonic now) that says it still runs:
  // marks it stuck when it is past the limit and its take was not marked yet.
  // `rendering_since_ms`: when it started rendering as far as is known (the
  // earliest it may have), nullopt while it waits in the provider's queue. The
  // learned limit is a render time, so it counts from there (a job that waits in
  // a queue is not stuck); poll.stuck_after_seconds counts from the submit.
  // Returns whether it marked it.
  bool check(Shot& shot, int64_t now_ms, std::optional<int64_t> rendering_since_ms);
  // The shot left IN_FLIGHT for a later step (its job completed): the stuck
  // reason no longer holds and is cleared (the mover saves the shot).
  void left_flight(Shot& shot);

 private:
  // The learned limit of a class, kept until the class learns more or a
  // minute passes (building a distribution costs about a millisecond).
  double learned_limit_s(const RenderClass& cls, int64_t now_ms);
  struct Cached {
    double limit_s = 0;
    std::size_t observations = 0;
    int64_t at_ms = 0;
  };
  Core& core_;
  const RenderModel& model_;
  std::map<std::string, Cached> limits_;  // by class key
};

}  // namespace wb
