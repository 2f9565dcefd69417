// Implementation notes. workers() sweeps the start and end events of the kept spans
// (ends before starts at the same instant, so back-to-back renders on one worker count
// once). expected_starts keeps the workers' free times in a min-heap.
#include "jobs/engine/queue_model.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <queue>
#include <utility>

namespace wb {

bool QueueModel::observe_completed(double submitted_s, double queue_s, double render_s) {
  if (!std::isfinite(submitted_s) || !std::isfinite(queue_s) || !std::isfinite(render_s) || queue_s < 0 ||
      render_s <= 0)
    return false;
  const double start = submitted_s + queue_s;
  jobs_.push_back({start, start + render_s, queue_s > std::max(1.0, 0.1 * render_s)});
  if (jobs_.size() > kMaxJobs) jobs_.pop_front();
  return true;
}

std::optional<int> QueueModel::workers() const {
  if (std::none_of(jobs_.begin(), jobs_.end(), [](const Span& s) { return s.waited; })) return std::nullopt;
  std::vector<std::pair<double, int>> events;  // (time, +1 start / -1 end)
  // Each render is placed from our submit time, late by that submit's latency,
  // which varies per job: a render would seem to begin before the one it followed
  // on the same worker ended. Spans shrunk by 5% of their length at each end do
  // not touch for such a slip; renders that truly overlap still do.
  for (const Span& s : jobs_) {
    const double slack = 0.05 * (s.end - s.start);
    events.emplace_back(s.start + slack, +1);
    events.emplace_back(s.end - slack, -1);
  }
  std::sort(events.begin(), events.end());  // -1 sorts before +1 at the same time
  int now = 0, most = 0;
  for (const auto& e : events) most = std::max(most, now += e.second);
  return std::max(most, 1);
}

std::vector<double> QueueModel::expected_starts(double now_s, const std::vector<double>& running_expected_ends,
                                                int queued_count, double mean_render_s) const {
  std::vector<double> starts;
  if (queued_count <= 0) return starts;
  auto w = workers();
  if (!w) return std::vector<double>(queued_count, now_s);
  std::priority_queue<double, std::vector<double>, std::greater<>> free_at;
  for (double end : running_expected_ends) free_at.push(std::max(end, now_s));
  for (int i = static_cast<int>(running_expected_ends.size()); i < *w; ++i) free_at.push(now_s);
  for (int i = 0; i < queued_count; ++i) {
    double start = free_at.top();
    free_at.pop();
    starts.push_back(start);
    free_at.push(start + std::max(mean_render_s, 0.0));
  }
  return starts;
}

std::optional<int> QueueModel::submit_ahead_cap(double mean_render_s, double record_life_s) const {
  auto w = workers();
  if (!w) return std::nullopt;
  if (!(mean_render_s > 0) || mean_render_s > 0.4 * record_life_s) return 0;
  // At most 40% of the life per render, so this is at least 1.25 per worker.
  return static_cast<int>(std::floor(*w * (record_life_s / 2) / mean_render_s));
}

}  // namespace wb
