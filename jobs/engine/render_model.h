// How long the provider renders one job, learned per class (resolution, duration) as a
// distribution, and kept across restarts.
//
// Decides: the render-time distribution the poll policy places polls on.
// Learns from: the `inference_time` (seconds) of each completed job's result metrics.
// Before a class has observations it uses, in this order:
//   1. a learned neighbour class (same resolution first, then the nearest duration),
//      its samples scaled by the ratio of the two priors and widened (log sigma >= 0.2),
//      because the scaling below is an assumption;
//   2. the prior: lognormal, median 138 s (the product page's figure for 5 s at 720P),
//      scaled linearly by duration (d / 5) and by 2.25 for 1080P (1920x1080 has 2.25x
//      the pixels of 1280x720, and render time is assumed proportional to pixels x
//      frames), with log sigma 0.5: wide, since the figure is one quote (95% of its mass
//      within 0.38x..2.7x of the median).
// A learned class is a kernel density in log time over its last 256 samples, with a
// bandwidth that shrinks with the sample count (0.15/sqrt(n), or Silverman's rule if
// wider): as narrow as the data, wide while there are few.
// Pure: no clock, no I/O. Times are seconds.
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wb {

struct RenderClass {
  std::string resolution;    // "720P" or "1080P"
  int duration_seconds = 5;  // 1..15

  bool valid() const;
  std::string key() const;  // "720P/5s"
  static std::optional<RenderClass> from_key(std::string_view key);
};

// A render-time distribution as a piecewise-linear CDF over a log-spaced grid, so that
// cdf, quantile and the integral of the cdf (what detection delays are made of) are
// exact lookups. Copyable value; build once per class and reuse (building costs about
// a millisecond for 256 samples).
class RenderDist {
 public:
  // Each sample a lognormal kernel of log sigma `log_bandwidth`. Empty or non-positive
  // samples give an empty distribution.
  static RenderDist from_samples(const std::vector<double>& seconds, double log_bandwidth);
  static RenderDist lognormal(double median_s, double log_sigma);

  bool empty() const { return t_.empty(); }
  double cdf(double t) const;
  double quantile(double p) const;
  double mean() const;
  // Integral of cdf over [0, t]: the expected delay of a poll at b for completions in
  // (a, b] is cdf_integral(b) - cdf_integral(a) - cdf(a) * (b - a).
  double cdf_integral(double t) const;
  // E[T - t | T > t]; past the distribution's end, a quarter of the mean (an overrun
  // says the distribution is wrong, not how much longer it will take).
  double mean_residual(double t) const;
  // The distribution of T + U with U uniform on [0, w]: a start known only to lie in a
  // window of w seconds.
  RenderDist widened(double w) const;
  // Past this time the distribution is a guess: a learned one's largest sample (beyond
  // it only the last kernel's tail, whose rising hazard would pack polls ever closer).
  // Infinite for the parametric prior.
  double known_until() const { return known_until_; }

 private:
  // Tabulates `cdf` on a log-spaced grid over [lo, hi].
  static RenderDist from_cdf(double lo, double hi, const std::function<double(double)>& cdf);
  std::vector<double> t_, f_, g_;  // knots, cdf at knots, integral of cdf up to knots
  double known_until_ = std::numeric_limits<double>::infinity();
};

class RenderModel {
 public:
  static constexpr std::size_t kMaxSamples = 256;
  static constexpr double kPriorLogSigma = 0.5;
  static constexpr double kNeighbourMinLogSigma = 0.2;

  // Records one render. Ignores (returns false) an invalid class and a time that is
  // not finite or outside (0, 86400] seconds.
  bool observe(const RenderClass& cls, double seconds);
  std::size_t observations(const RenderClass& cls) const;
  RenderDist dist(const RenderClass& cls) const;
  // The product page's figure scaled to the class (see above); 0 for an invalid class.
  static double prior_median(const RenderClass& cls, double base_seconds = kDefaultPriorSeconds);
  // The prior's 5 s 720P median (poll.prior_render_seconds); 138 s by default.
  static constexpr double kDefaultPriorSeconds = 138.0;
  void set_prior_seconds(double seconds) { prior_seconds_ = seconds > 0 ? seconds : kDefaultPriorSeconds; }
  double prior_seconds() const { return prior_seconds_; }

  // {"version":1,"classes":{"720P/5s":[seconds, oldest first], ...}}: at most
  // 30 classes x 256 samples whatever was observed.
  nlohmann::json to_json() const;
  // Never throws: what cannot be read (another version, a wrong shape, an invalid class
  // or sample) is left out, so a damaged record gives a smaller or empty model.
  static RenderModel from_json(const nlohmann::json& j) noexcept;

 private:
  std::map<std::string, std::deque<double>> samples_;  // by RenderClass::key()
  double prior_seconds_ = kDefaultPriorSeconds;
};

}  // namespace wb
