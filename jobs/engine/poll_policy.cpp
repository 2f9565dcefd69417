// Implementation notes. H(a, b) = G(b) - G(a) - F(a)(b - a), with G the integral of the
// CDF, is the unconditional expected delay of the completions in (a, b]; it grows with
// b, so each step is a bisection. A schedule runs from the start until less than 1e-5 of
// the mass is left (or 2,000 polls, a guard for a ceiling far below the render time).
// The p95 of the delay solves sum_k max(0, F(t_k - y) - F(t_{k-1})) = 0.05 for y.
#include "jobs/engine/poll_policy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace wb {
namespace {

constexpr double kMargin = 0.9;           // calibrate to 90% of the targets
constexpr double kJitterFraction = 0.05;  // of the gap
constexpr double kLeftMass = 1e-5;
constexpr double kOverrunMass = 0.02;  // under the 5% a p95 leaves out
constexpr int kMaxPolls = 2000;

// The gap, 5% x unit of it taken off, or added when taking it off would break the
// floor; never past the ceiling (with floor == ceiling, no jitter is left).
double jittered(double last, double gap, double min_gap, double max_gap, double unit) {
  unit = std::clamp(std::isfinite(unit) ? unit : 0.0, 0.0, 1.0);
  const double j = kJitterFraction * unit * gap;
  return gap - j >= min_gap ? last + gap - j : last + std::min(gap + j, std::max(gap, max_gap));
}

}  // namespace

PollPlan::PollPlan(const RenderDist& render, double start_spread_s, const PollBounds& bounds)
    : dist_(render.widened(start_spread_s)), bounds_(bounds) {
  bounds_.min_interval_s = std::max(bounds_.min_interval_s, 1e-3);
  bounds_.max_interval_s = std::max(bounds_.max_interval_s, bounds_.min_interval_s);
  if (dist_.empty()) return;
  mean_ = dist_.mean();
  const double target = bounds_.target_delay_fraction * render.mean();
  auto fits = [&](double c) {
    PollPrediction p = predict(c);
    return p.mean_delay_s <= kMargin * target && p.p95_delay_s <= kMargin * 2 * target;
  };
  // Largest c that fits, by bisection in log space; the floor alone may not fit, then
  // the smallest c (polls as often as the floor allows).
  double lo = std::log(1e-7 * render.mean()), hi = std::log(render.mean());
  if (fits(std::exp(hi))) lo = hi;
  for (int i = 0; i < 30 && hi - lo > 1e-3; ++i) {
    double mid = (lo + hi) / 2;
    (fits(std::exp(mid)) ? lo : hi) = mid;
  }
  c_ = std::exp(lo);
}

double PollPlan::step(double a, double c) const {
  const double lo = a + bounds_.min_interval_s;
  const double hi = std::max(lo, a + bounds_.max_interval_s);  // the ceiling binds every gap
  const double fa = dist_.cdf(a), ga = dist_.cdf_integral(a);
  const double need = c * (1 - fa);
  // Past what the distribution knows (its end, or a learned one's largest sample once
  // less than kOverrunMass is left: with few samples much of the mass lies beyond the
  // largest, and delays of 6% there would leave no p95 to calibrate) the job overruns
  // it: gaps grow with the time it has run (twice the delay target of it), up to the
  // ceiling.
  if (1 - fa < kLeftMass || (a >= dist_.known_until() && 1 - fa <= kOverrunMass)) return std::clamp(a + 2 * bounds_.target_delay_fraction * a, lo, hi);
  auto delay = [&](double b) { return dist_.cdf_integral(b) - ga - fa * (b - a); };
  // Past the mean, the tail is what the distribution knows least (a few samples, or
  // none of a slow spell): no gap is longer than twice the delay target of the time
  // the job has run, so a job in the tail is still noticed within that share of its
  // render however thin the learned tail.
  double cap = hi;
  if (a >= mean_) cap = std::clamp(a + 2 * bounds_.target_delay_fraction * a, lo, hi);
  if (delay(lo) >= need) return lo;
  if (delay(cap) < need) return cap;
  double l = lo, h = cap;
  for (int i = 0; i < 40 && h - l > 1e-6 * h; ++i) {
    double mid = (l + h) / 2;
    (delay(mid) >= need ? h : l) = mid;
  }
  return h;
}

PollPrediction PollPlan::predict(double c) const {
  PollPrediction p;
  std::vector<double> t{0.0};
  while (1 - dist_.cdf(t.back()) > kLeftMass && static_cast<int>(t.size()) <= kMaxPolls) {
    const double a = t.back(), b = step(a, c);
    p.polls += 1 - dist_.cdf(a);
    p.mean_delay_s += dist_.cdf_integral(b) - dist_.cdf_integral(a) - dist_.cdf(a) * (b - a);
    t.push_back(b);
  }
  auto late = [&](double y) {  // P(delay > y)
    double sum = 0;
    for (std::size_t k = 1; k < t.size(); ++k)
      if (t[k] - y > t[k - 1]) sum += dist_.cdf(t[k] - y) - dist_.cdf(t[k - 1]);
    return sum;
  };
  double lo = 0, hi = bounds_.max_interval_s + bounds_.min_interval_s;
  for (std::size_t k = 1; k < t.size(); ++k) hi = std::max(hi, t[k] - t[k - 1]);
  for (int i = 0; i < 40; ++i) {
    double mid = (lo + hi) / 2;
    (late(mid) > 0.05 ? lo : hi) = mid;
  }
  p.p95_delay_s = hi;
  return p;
}

PollPrediction PollPlan::predict() const { return dist_.empty() ? PollPrediction{} : predict(c_); }

double PollPlan::next_poll_at(double now_s, double start_s, double last_poll_s, double jitter_unit) const {
  const double last = std::max(last_poll_s, start_s);
  double gap = bounds_.min_interval_s;
  if (!dist_.empty()) {
    const double a = last - start_s;
    gap = step(a, c_) - a;
  }
  return std::max(now_s, jittered(last, gap, bounds_.min_interval_s, bounds_.max_interval_s, jitter_unit));
}

double next_poll_at(const PollContext& ctx) {
  PollBounds bounds{ctx.target_delay_fraction, ctx.min_interval_s, ctx.max_interval_s};
  if (ctx.dist == nullptr || ctx.dist->empty())
    return std::max(ctx.now_s, jittered(ctx.last_poll_s, std::max(ctx.min_interval_s, 1e-3), ctx.min_interval_s,
                                        ctx.max_interval_s, ctx.jitter_unit));
  return PollPlan(*ctx.dist, ctx.start_spread_s, bounds).next_poll_at(ctx.now_s, ctx.start_s, ctx.last_poll_s,
                                                                     ctx.jitter_unit);
}

double next_queued_poll_at(double now_s, double expected_start_s, double margin_s, double min_interval_s,
                           double jitter_unit) {
  const double gap = std::max(expected_start_s + std::max(margin_s, 0.0) - now_s, min_interval_s);
  return jittered(now_s, gap, min_interval_s, std::numeric_limits<double>::infinity(), jitter_unit);
}

}  // namespace wb
