#include "jobs/throttle.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>

namespace wb {

namespace {
constexpr double kMsPerMinute = 60000.0;
constexpr double kEpsilon = 1e-6;

struct tm local_tm(TimePoint t) {
  time_t secs = static_cast<time_t>(to_epoch_ms(t) / 1000);
  struct tm tm {};
  localtime_r(&secs, &tm);
  return tm;
}
}  // namespace

SubmitBucket::SubmitBucket(double per_minute, double window_seconds, MonoPoint now)
    : configured_(per_minute),
      rate_(per_minute),
      window_(static_cast<int64_t>(window_seconds * 1000.0)),
      last_(now) {
  refresh(now);
}

void SubmitBucket::refresh(MonoPoint now) {
  // Slow recovery: after 10 s without a 429, a tenth of the configured rate comes
  // back every further 10 s.
  double ms = std::chrono::duration<double, std::milli>(now - last_).count();
  if (ms > 0 && rate_ < configured_ && now - last_429_ > std::chrono::seconds(10))
    rate_ = std::min(configured_, rate_ + configured_ * 0.1 * ms / 10000.0);
  if (ms > 0) last_ = now;
  // Whole submits only: the count is rounded down and the span never shorter than the
  // window, so no span of the window's length ever holds more than the rate allows.
  double in_window = rate_ * static_cast<double>(window_.count()) / kMsPerMinute;
  allowed_ = in_window >= 1.0 ? static_cast<size_t>(in_window + kEpsilon) : 1;
  span_ = std::max(window_, Millis(static_cast<int64_t>(std::ceil(kMsPerMinute / rate_))));
  while (!sent_.empty() && sent_.front() + span_ <= now) sent_.pop_front();
}

bool SubmitBucket::try_take(MonoPoint now) {
  refresh(now);
  if (sent_.size() >= allowed_) return false;
  sent_.push_back(now);
  return true;
}

MonoPoint SubmitBucket::next_token(MonoPoint now) {
  refresh(now);
  if (sent_.size() < allowed_) return now;
  // The submit whose leaving the span makes room (after a 429 lowered the rate, more
  // than one may have to leave).
  return sent_[sent_.size() - allowed_] + span_;
}

void SubmitBucket::remember(MonoPoint at, MonoPoint now) {
  refresh(now);
  if (at > now) at = now;
  if (at + span_ <= now) return;
  sent_.insert(std::upper_bound(sent_.begin(), sent_.end(), at), at);
}

void SubmitBucket::on_rate_limited(MonoPoint now) {
  refresh(now);
  rate_ = std::max(1.0, rate_ * 0.9);
  last_429_ = now;
  refresh(now);
}

std::optional<TimeWindow> TimeWindow::parse(const std::string& text, std::string& error) {
  TimeWindow w;
  w.text_ = text;
  if (text.empty()) return w;
  int h1, m1, h2, m2;
  char tail;
  if (std::sscanf(text.c_str(), "%d:%d-%d:%d%c", &h1, &m1, &h2, &m2, &tail) != 4 || h1 < 0 || h1 > 24 ||
      h2 < 0 || h2 > 24 || m1 < 0 || m1 > 59 || m2 < 0 || m2 > 59 || (h1 == 24 && m1) || (h2 == 24 && m2)) {
    error = "must look like 22:00-07:00 (local time, HH:MM-HH:MM), got '" + text + "'";
    return std::nullopt;
  }
  w.start_ = (h1 * 60 + m1) % 1440;
  w.end_ = (h2 * 60 + m2) % 1440;
  if (w.start_ == w.end_) {
    error = "start and end are the same; leave it empty for no window";
    return std::nullopt;
  }
  return w;
}

bool TimeWindow::contains(TimePoint t) const {
  if (always()) return true;
  struct tm tm = local_tm(t);
  int m = tm.tm_hour * 60 + tm.tm_min;
  return start_ < end_ ? (m >= start_ && m < end_) : (m >= start_ || m < end_);
}

TimePoint TimeWindow::next_open(TimePoint t) const {
  if (contains(t)) return t;
  // Step to the next whole minute, then minute by minute: local time may jump
  // (DST), so no arithmetic on wall-clock minutes is trusted.
  int64_t ms = to_epoch_ms(t);
  TimePoint p = from_epoch_ms((ms / 60000 + 1) * 60000);
  for (int i = 0; i < 2 * 1500; ++i, p += std::chrono::minutes(1))
    if (contains(p)) return p;
  return p;
}

Millis backoff_delay(int attempts, double base_seconds, double max_seconds, double unit) {
  double delay = std::min(base_seconds * std::pow(2.0, std::clamp(attempts, 0, 30)), max_seconds);
  return Millis(static_cast<int64_t>(delay * (0.8 + 0.4 * unit) * 1000.0));
}

std::string local_day(TimePoint t) {
  struct tm tm = local_tm(t);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
  return buf;
}

}  // namespace wb
