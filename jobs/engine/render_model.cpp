// Implementation notes. The CDF is tabulated on 512 knots spaced evenly in log time and
// interpolated linearly in time between them, so the density is piecewise constant and
// the integral of the CDF (kept per knot in g_) is exact piecewise-quadratic. The kernel
// density sums, per knot, only the kernels within 6 bandwidths; those further left
// count as 1. Learned samples live in a deque per class, oldest first, at most 256.
#include "jobs/engine/render_model.h"

#include <algorithm>
#include <cmath>

namespace wb {
namespace {

constexpr int kKnots = 512;
constexpr double kPriorDuration = 5.0;
constexpr double k1080Factor = 2.25;     // (1920 * 1080) / (1280 * 720)
constexpr double kMaxSeconds = 86400.0;

double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

// Kernel bandwidth in log time for samples `x` (logs): as narrow as the data allows.
double bandwidth(std::vector<double> x) {
  const double n = static_cast<double>(x.size());
  if (x.empty()) return RenderModel::kPriorLogSigma;
  double mean = 0;
  for (double v : x) mean += v / n;
  double var = 0;
  for (double v : x) var += (v - mean) * (v - mean) / n;
  std::sort(x.begin(), x.end());
  auto at = [&](double p) { return x[static_cast<std::size_t>(p * (n - 1))]; };
  double spread = std::sqrt(var);
  double iqr = (at(0.75) - at(0.25)) / 1.34;
  if (iqr > 0) spread = std::min(spread, iqr);
  double silverman = 0.9 * spread * std::pow(n, -0.2);
  return std::max({silverman, 0.15 / std::sqrt(n), 0.01});
}

}  // namespace

bool RenderClass::valid() const {
  return (resolution == "720P" || resolution == "1080P") && duration_seconds >= 1 && duration_seconds <= 15;
}

std::string RenderClass::key() const { return resolution + "/" + std::to_string(duration_seconds) + "s"; }

std::optional<RenderClass> RenderClass::from_key(std::string_view key) {
  auto slash = key.find('/');
  if (slash == std::string_view::npos || key.size() < slash + 3 || key.back() != 's') return std::nullopt;
  std::string_view digits = key.substr(slash + 1, key.size() - slash - 2);
  if (digits.empty() || digits.size() > 2) return std::nullopt;
  int d = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    d = d * 10 + (c - '0');
  }
  RenderClass cls{std::string(key.substr(0, slash)), d};
  if (!cls.valid() || cls.key() != key) return std::nullopt;
  return cls;
}

RenderDist RenderDist::from_cdf(double lo, double hi, const std::function<double(double)>& cdf) {
  RenderDist d;
  d.t_.resize(kKnots);
  d.f_.resize(kKnots);
  d.g_.resize(kKnots);
  const double step = std::log(hi / lo) / (kKnots - 1);
  for (int i = 0; i < kKnots; ++i) {
    d.t_[i] = lo * std::exp(step * i);
    d.f_[i] = std::clamp(cdf(d.t_[i]), 0.0, 1.0);
    if (i > 0) d.f_[i] = std::max(d.f_[i], d.f_[i - 1]);
  }
  d.t_.back() = hi;
  d.f_.front() = 0.0;
  d.f_.back() = 1.0;
  d.g_[0] = 0.0;
  for (int i = 1; i < kKnots; ++i) d.g_[i] = d.g_[i - 1] + (d.t_[i] - d.t_[i - 1]) * (d.f_[i] + d.f_[i - 1]) / 2;
  return d;
}

RenderDist RenderDist::from_samples(const std::vector<double>& seconds, double log_bandwidth) {
  std::vector<double> x;
  for (double s : seconds)
    if (std::isfinite(s) && s > 0) x.push_back(std::log(s));
  if (x.empty() || !(log_bandwidth > 0) || !std::isfinite(log_bandwidth)) return {};
  std::sort(x.begin(), x.end());
  const double h = log_bandwidth, reach = 6 * h, n = static_cast<double>(x.size());
  auto cdf = [&](double t) {
    const double lt = std::log(t);
    auto first = std::lower_bound(x.begin(), x.end(), lt - reach);
    auto last = std::upper_bound(x.begin(), x.end(), lt + reach);
    double sum = static_cast<double>(first - x.begin());
    for (auto it = first; it != last; ++it) sum += normal_cdf((lt - *it) / h);
    return sum / n;
  };
  RenderDist d = from_cdf(std::exp(x.front() - reach), std::exp(x.back() + reach), cdf);
  d.known_until_ = std::exp(x.back());
  return d;
}

RenderDist RenderDist::lognormal(double median_s, double log_sigma) {
  RenderDist d = from_samples({median_s}, log_sigma);
  d.known_until_ = std::numeric_limits<double>::infinity();
  return d;
}

double RenderDist::cdf(double t) const {
  if (empty() || t <= t_.front()) return 0.0;
  if (t >= t_.back()) return 1.0;
  std::size_t i = std::upper_bound(t_.begin(), t_.end(), t) - t_.begin() - 1;
  return f_[i] + (f_[i + 1] - f_[i]) * (t - t_[i]) / (t_[i + 1] - t_[i]);
}

double RenderDist::quantile(double p) const {
  if (empty()) return 0.0;
  if (p <= 0) return t_.front();
  if (p >= 1) return t_.back();
  std::size_t i = std::lower_bound(f_.begin(), f_.end(), p) - f_.begin();  // f_[i] >= p > f_[i-1]
  if (i == 0) return t_.front();
  return t_[i - 1] + (t_[i] - t_[i - 1]) * (p - f_[i - 1]) / (f_[i] - f_[i - 1]);
}

double RenderDist::cdf_integral(double t) const {
  if (empty() || t <= t_.front()) return 0.0;
  if (t >= t_.back()) return g_.back() + (t - t_.back());
  std::size_t i = std::upper_bound(t_.begin(), t_.end(), t) - t_.begin() - 1;
  return g_[i] + (t - t_[i]) * (f_[i] + cdf(t)) / 2;
}

double RenderDist::mean() const { return empty() ? 0.0 : t_.back() - g_.back(); }

double RenderDist::mean_residual(double t) const {
  if (empty()) return 0.0;
  const double survive = 1.0 - cdf(t);
  if (survive < 1e-9) return mean() / 4;
  t = std::max(t, 0.0);
  return ((t_.back() - t) - (g_.back() - cdf_integral(t))) / survive;
}

RenderDist RenderDist::widened(double w) const {
  if (empty() || !(w > 0) || !std::isfinite(w)) return *this;
  auto cdf = [&](double t) { return (cdf_integral(t) - cdf_integral(t - w)) / w; };
  RenderDist d = from_cdf(t_.front(), t_.back() + w, cdf);
  d.known_until_ = known_until_ + w;
  return d;
}

bool RenderModel::observe(const RenderClass& cls, double seconds) {
  if (!cls.valid() || !std::isfinite(seconds) || seconds <= 0 || seconds > kMaxSeconds) return false;
  auto& q = samples_[cls.key()];
  q.push_back(seconds);
  if (q.size() > kMaxSamples) q.pop_front();
  return true;
}

std::size_t RenderModel::observations(const RenderClass& cls) const {
  auto it = samples_.find(cls.key());
  return it == samples_.end() ? 0 : it->second.size();
}

double RenderModel::prior_median(const RenderClass& cls, double base_seconds) {
  if (!cls.valid()) return 0.0;
  return base_seconds * cls.duration_seconds / kPriorDuration * (cls.resolution == "1080P" ? k1080Factor : 1.0);
}

RenderDist RenderModel::dist(const RenderClass& cls) const {
  if (!cls.valid()) return {};
  auto logs = [](const std::deque<double>& q, double scale) {
    std::vector<double> x;
    for (double s : q) x.push_back(std::log(s * scale));
    return x;
  };
  auto own = samples_.find(cls.key());
  if (own != samples_.end() && !own->second.empty()) {
    std::vector<double> s(own->second.begin(), own->second.end());
    return RenderDist::from_samples(s, bandwidth(logs(own->second, 1.0)));
  }
  // The nearest learned neighbour: same resolution first, then the nearest duration,
  // then the one with more samples.
  const std::deque<double>* best = nullptr;
  RenderClass best_cls;
  auto score = [&](const RenderClass& c) {
    return std::abs(c.duration_seconds - cls.duration_seconds) + (c.resolution == cls.resolution ? 0 : 100);
  };
  for (const auto& [key, q] : samples_) {
    auto c = RenderClass::from_key(key);
    if (!c || q.empty()) continue;
    if (!best || score(*c) < score(best_cls) || (score(*c) == score(best_cls) && q.size() > best->size())) {
      best = &q;
      best_cls = *c;
    }
  }
  if (best) {
    const double ratio = prior_median(cls, prior_seconds_) / prior_median(best_cls, prior_seconds_);
    std::vector<double> s;
    for (double v : *best) s.push_back(v * ratio);
    return RenderDist::from_samples(s, std::max(bandwidth(logs(*best, 1.0)), kNeighbourMinLogSigma));
  }
  return RenderDist::lognormal(prior_median(cls, prior_seconds_), kPriorLogSigma);
}

nlohmann::json RenderModel::to_json() const {
  nlohmann::json classes = nlohmann::json::object();
  for (const auto& [key, q] : samples_) classes[key] = std::vector<double>(q.begin(), q.end());
  return {{"version", 1}, {"classes", classes}};
}

RenderModel RenderModel::from_json(const nlohmann::json& j) noexcept {
  RenderModel m;
  try {
    if (!j.is_object() || j.value("version", nlohmann::json()) != 1) return m;
    auto classes = j.find("classes");
    if (classes == j.end() || !classes->is_object()) return m;
    for (const auto& [key, list] : classes->items()) {
      auto cls = RenderClass::from_key(key);
      if (!cls || !list.is_array()) continue;
      for (const auto& v : list)
        if (v.is_number()) m.observe(*cls, v.get<double>());
    }
  } catch (...) {
    return RenderModel();
  }
  return m;
}

}  // namespace wb
