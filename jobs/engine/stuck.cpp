#include "jobs/engine/stuck.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "jobs/log_context.h"

namespace wb {

double stuck_limit_seconds(const RenderDist& dist, double stuck_after_seconds) {
  if (stuck_after_seconds > 0) return stuck_after_seconds;
  if (dist.empty()) return 0;
  return 2 * dist.quantile(0.99);
}

bool is_stuck(const Shot& shot) {
  return shot.state == ShotState::in_flight && !shot.request_id.empty() && shot.stuck_request_id == shot.request_id;
}

bool is_stuck_now(const Shot& shot) { return shot.seen_running && is_stuck(shot); }

namespace {
constexpr const char* kStuckReason = "stuck: ";
std::string minutes_text(double seconds) {
  if (seconds < 120) return std::to_string(static_cast<long>(std::lround(seconds))) + " s";
  return std::to_string(static_cast<long>(std::lround(seconds / 60))) + " min";
}
}  // namespace

double StuckWatch::learned_limit_s(const RenderClass& cls, int64_t now_ms) {
  const std::size_t n = model_.observations(cls);
  auto it = limits_.find(cls.key());
  if (it != limits_.end() && it->second.observations == n && now_ms - it->second.at_ms < 60000)
    return it->second.limit_s;
  Cached c{stuck_limit_seconds(model_.dist(cls), 0), n, now_ms};
  limits_[cls.key()] = c;
  return c.limit_s;
}

void StuckWatch::left_flight(Shot& shot) {
  if (shot.reason.rfind(kStuckReason, 0) == 0) shot.reason.clear();
}

bool StuckWatch::check(Shot& shot, int64_t now_ms, std::optional<int64_t> rendering_since_ms) {
  if (shot.state != ShotState::in_flight || shot.request_id.empty() || !shot.seen_running) return false;
  if (shot.stuck_request_id == shot.request_id) return false;  // this take was announced
  const double setting = core_.settings.poll.stuck_after_seconds;
  int64_t since_ms = shot.followed_since_ms;
  if (setting <= 0) {
    if (!rendering_since_ms) return false;  // waiting for a worker, not rendering
    since_ms = std::max({since_ms, *rendering_since_ms, shot.render_not_before_ms});
  }
  const double in_flight_s = static_cast<double>(now_ms - since_ms) / 1000.0;
  const RenderClass cls{shot.spec.resolution, shot.spec.duration};
  const double limit_s = setting > 0 ? setting : learned_limit_s(cls, now_ms);
  if (limit_s <= 0 || in_flight_s <= limit_s) return false;
  LogScope log_scope(shot.key(), shot.request_id);
  shot.stuck_request_id = shot.request_id;
  shot.reason = std::string(kStuckReason) + (setting > 0 ? "in flight for " : "rendering for ") + minutes_text(in_flight_s) + ", over " + minutes_text(limit_s) +
                (setting > 0 ? " (poll.stuck_after_seconds)" : " (twice the 99th percentile of " + cls.key() + " renders)") +
                "; still followed, never resubmitted by itself: look at request " + shot.request_id +
                " on the provider's dashboard";
  core_.save(shot);
  spdlog::warn("{}: {}", shot.key(), shot.reason);
  core_.events.emit(Event::stuck(shot.key(), shot.reason, in_flight_s, limit_s));
  return true;
}

}  // namespace wb
