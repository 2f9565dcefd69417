// When to poll a job's status next: as few polls as possible while completion is
// noticed soon enough.
//
// Decides: the absolute time (seconds, monotonic scale of the caller) of the next status
// poll of one job, from the render-time distribution of its class (RenderDist), when it
// started PROCESSING (a window [start, start + spread]) and when it was last seen not
// completed. A QUEUED job is polled at its expected start (QueueModel) instead.
//
// Placement: a poll at b after a poll at a (times since the start) that found the job
// not completed catches the completions in (a, b] with an expected delay, conditioned on
// T > a, of E[(b - T) 1{T <= b} | T > a]. Every poll is placed where that conditional
// delay equals one constant c. That is the Lagrangian optimum of "fewest polls for a
// given mean delay" (interval ~ sqrt(2c / hazard)): narrow where completions are dense,
// wide in the tails and before the body, so jobs that finish early are caught within
// the budget and low-probability tails get few polls. c is calibrated once per plan, by
// bisection on the whole schedule computed on the distribution, to the largest value with
// mean delay <= 0.9 x target and p95 delay <= 0.9 x 2 x target, where target =
// target_delay_fraction x the render mean (the 10% margin absorbs the gap between the
// learned distribution and the real one). Since every interval costs c, mean delay =
// c x expected polls.
// Overrun: past what the distribution knows (RenderDist::known_until: a learned class's
// largest sample, once under 2% of the mass is left there, where only the last kernel's tail is left, whose rising hazard would
// pack polls ever closer) every gap is 2 x target_delay_fraction of the time since the
// start. The tail: past the distribution's mean no gap exceeds that either: a learned
// tail rests on few samples, and a job in it is still noticed within twice the target
// share of its render (a 5% tail of 2x renders made p95 delays of 20% in bench-polling).
// Bounds: min_interval_s is a floor and max_interval_s a ceiling on every gap, the first
// one included (an operator's "never longer than this between polls"). The ceiling must
// not stop the goal being met: a job is not polled before completion is plausible only
// when the ceiling lets it wait that long, so it should exceed the first gap (about the
// distribution's 1% quantile: ~100 s for a learned 138 s class). The shipped 300 s does
// at every class up to 1080P at 15 s; below ~1/10 of a render the ceiling adds polls.
// Jitter: a jitter_unit u in [0, 1) takes 5% x u of the gap off (or adds it, when taking
// it off would break the floor, but never past the ceiling), so identical jobs spread
// out and never poll in lockstep, and the delay bounds still hold.
// Pure: no clock, no I/O.
#pragma once

#include "jobs/engine/render_model.h"

namespace wb {

struct PollBounds {
  double target_delay_fraction = 0.03;
  double min_interval_s = 2;
  double max_interval_s = 15;
};

struct PollPrediction {
  double polls = 0;           // expected status polls from the start to detection
  double mean_delay_s = 0;    // expected detection delay
  double p95_delay_s = 0;
};

// A calibrated placement for one distribution, one start window and one set of bounds.
// Building one plans the whole schedule a few dozen times (about a millisecond for a
// learned class, a few for the wide prior); build it once per class and start window and
// reuse it for every poll of the jobs that share them.
class PollPlan {
 public:
  PollPlan(const RenderDist& render, double start_spread_s, const PollBounds& bounds);

  // The next poll after `last_poll_s` (<= start_s when none since the start), never
  // before `now_s`. `jitter_unit` in [0, 1).
  double next_poll_at(double now_s, double start_s, double last_poll_s, double jitter_unit) const;
  // What the schedule (without jitter) gives on this plan's own distribution.
  PollPrediction predict() const;
  double per_poll_delay_s() const { return c_; }

 private:
  double step(double a, double c) const;  // next poll time since the start after one at a
  PollPrediction predict(double c) const;

  RenderDist dist_;  // render time widened by the start window
  PollBounds bounds_;
  double c_ = 0;
  double mean_ = 0;  // of dist_: past it, gaps are capped (the tail)
};

struct PollContext {
  double now_s = 0;
  double start_s = 0;         // earliest the job may have started PROCESSING
  double start_spread_s = 0;  // it started within [start_s, start_s + start_spread_s]
  double last_poll_s = 0;     // last poll that found it not completed (<= start_s: none)
  const RenderDist* dist = nullptr;
  double target_delay_fraction = 0.03;
  double min_interval_s = 2;
  double max_interval_s = 15;
  double jitter_unit = 0;  // [0, 1)
};

// One-off form of PollPlan(...).next_poll_at(...). Without a distribution (null or
// empty): last poll + min_interval_s, never before now.
double next_poll_at(const PollContext& ctx);

// A QUEUED job: poll once it is expected to have started (expected_start_s from
// QueueModel::expected_starts, plus `margin_s` for the uncertainty of that estimate),
// never before now + min_interval_s; the same jitter as above on the wait. Called again
// after each poll and whenever the estimate moves, it costs a handful of polls however
// long the job waits. No ceiling: the record lives an hour whether polled or not.
double next_queued_poll_at(double now_s, double expected_start_s, double margin_s, double min_interval_s,
                           double jitter_unit);

}  // namespace wb
