// The provider's queue as our jobs see it: how many of them it renders at once, when
// each queued one will start, and how many may wait there.
//
// Decides: the concurrency (workers) the provider gives our jobs, learned from completed
// jobs; each queued job's expected start; the cap on our jobs waiting at the provider.
// Learns from: each completed job's submit time (ours, monotonic seconds) and the
// `queue_time` and `inference_time` of its result metrics, which place its render on our
// time line: start = submit + queue, end = start + render.
// Assumptions: the provider runs our jobs FIFO on `workers` identical workers; other
// users' load shows up as fewer workers. A job waited when its queue time is over 10% of
// its render (and 1 s: queue time also holds the provider's own overhead). Until a job
// that waited completes, no limit has been seen: workers() is empty (unlimited), and
// then workers() is the most of our renders seen overlapping, over the last 256 jobs
// (each shrunk by 5% at both ends: our clock places them a latency late, per job).
// Not persisted: a restart learns it again from the first jobs that wait.
// Pure: no clock, no I/O. Times are seconds.
#pragma once

#include <cstddef>
#include <deque>
#include <optional>
#include <vector>

namespace wb {

class QueueModel {
 public:
  static constexpr std::size_t kMaxJobs = 256;

  // Ignores (returns false) a time that is not finite or negative, and a render <= 0.
  bool observe_completed(double submitted_s, double queue_s, double render_s);
  std::optional<int> workers() const;

  // For our `queued_count` queued jobs in submit order: each one's expected start, FIFO
  // onto the earliest free worker, from now and the expected ends of our running jobs
  // (each later queued job taking mean_render_s). Workers unknown: all start now.
  std::vector<double> expected_starts(double now_s, const std::vector<double>& running_expected_ends,
                                      int queued_count, double mean_render_s) const;

  // How many of our jobs may wait at the provider (beyond the ones rendering): as many as
  // start within half the record life (a record lives about an hour after its submit,
  // so each then has half an hour to render and be fetched): workers x life/2 / render.
  // That is at least 1.25 per worker whenever it is not 0, so no worker idles waiting
  // for our next submit. 0 when a render is over 40% of the record life (a second round
  // could not finish in time). Empty when workers() is: no limit seen, no cap from here.
  std::optional<int> submit_ahead_cap(double mean_render_s, double record_life_s = 3600) const;

 private:
  struct Span {
    double start, end;
    bool waited;
  };
  std::deque<Span> jobs_;  // oldest first
};

}  // namespace wb
