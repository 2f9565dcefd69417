// Pure throttling arithmetic, driven by the caller's clock: the submit token
// bucket with its 429 adaptation, and the local-time night window.
#pragma once

#include <deque>
#include <optional>
#include <string>

#include "jobs/util.h"

namespace wb {

// Submits per minute as a provider counts them: at most `per_minute x window / 60`
// submits (rounded down, at least one) in ANY span of `window` (limits.
// submit_window_seconds, 60 by default: the provider's window), so a fixed provider
// window is never overrun whatever its phase, and work that arrives after a quiet spell
// goes out at once instead of one spacing apart. A window at or under 60 s / rate is
// even spacing (one submit each 60 s / rate). Each 429 takes a tenth off the current
// rate (not below one a minute); once 10 s pass without one, a tenth of the configured
// rate comes back every 10 s. A single 429 costs little; a storm brings the rate down
// geometrically.
class SubmitBucket {
 public:
  SubmitBucket(double per_minute, double window_seconds, MonoPoint now);
  // Takes a token when one is available.
  bool try_take(MonoPoint now);
  // When the next token will be available (now if one is).
  MonoPoint next_token(MonoPoint now);
  void on_rate_limited(MonoPoint now);
  // A submit made at `at` (before a restart: the window is not forgotten, or the
  // first minute after a restart would send a second window's worth).
  void remember(MonoPoint at, MonoPoint now);
  double current_per_minute() const { return rate_; }

 private:
  void refresh(MonoPoint now);
  double configured_;
  double rate_;
  Millis window_;          // the configured window
  Millis span_{};          // the window in force: at least 60 s / rate
  size_t allowed_ = 1;     // submits allowed in any span
  std::deque<MonoPoint> sent_;  // the submits of the last span, oldest first
  MonoPoint last_;
  MonoPoint last_429_{};
};

// "HH:MM-HH:MM" in local time; may wrap midnight ("22:00-07:00"). Empty: always open.
class TimeWindow {
 public:
  // Returns nullopt and sets `error` when the text is not a window.
  static std::optional<TimeWindow> parse(const std::string& text, std::string& error);
  bool always() const { return start_ == end_; }
  bool contains(TimePoint t) const;
  // The first minute at or after `t` inside the window.
  TimePoint next_open(TimePoint t) const;
  const std::string& text() const { return text_; }

 private:
  int start_ = 0;  // minutes after local midnight
  int end_ = 0;
  std::string text_;
};

// Exponential backoff with jitter: base * 2^attempts, capped at max, times a
// factor in [0.8, 1.2) chosen by `unit` in [0, 1).
Millis backoff_delay(int attempts, double base_seconds, double max_seconds, double unit);

// The local calendar day of `t`, as "YYYY-MM-DD".
std::string local_day(TimePoint t);

}  // namespace wb
