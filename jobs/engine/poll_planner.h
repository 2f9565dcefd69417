// When each followed job is polled next: the engine's side of the learned
// policy. It keeps, per job, what is known of it (submitted, started, last
// seen not completed), learns render times per class (RenderModel, persisted
// in the store as one small record) and the provider's queue (QueueModel),
// and asks the pure placement (poll_policy.h) for each next poll. Plans are
// built per class and rebuilt only when a class has learned enough more
// (1, 2, 4 ... 256 of its own observations, then every 256; before its first,
// as often of every class's), so a poll costs a lookup.
//
// Scouts: while a class has no render of its own learned and none of its jobs has
// completed since the start, at most kScoutsPerClass of its rendering jobs (half
// the first seen PROCESSING, half drawn at random from the later ones) are polled
// on the plan; every other one, once its first poll has said PROCESSING (so a
// provider queue is seen as early as without scouts), is parked: polled at the
// ceiling (poll.max_interval_seconds; twice the class's expected render when that
// is shorter). The
// class's first completion ends the scouting: the parked jobs are handed back
// (take_moved_keys()) and planned on what it taught. A scout that ends otherwise
// (failed, cancelled, expired) hands its place to the oldest parked job.
// Why: the prior is wide because the product page's figure is one quote, not
// because one job differs that much from the next; a first night of 5,000 shots
// of a new class polled each on the prior cost 11 status polls a shot, with
// scouts about 2 (docs/BENCHMARKS.md, session 12). What it costs: jobs of the class
// that complete before every scout are noticed when the first scout is (or at
// their wait): with 16 scouts drawn at random, an expected 1/17 of them at most,
// whatever the order of the manifest (outside attack, session 12: 45 heavy shots
// first made every other job wait for the ceiling when the scouts were only the
// first seen).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "jobs/engine/poll_policy.h"
#include "jobs/engine/queue_model.h"
#include "jobs/engine/render_model.h"
#include "jobs/settings.h"
#include "jobs/shot.h"

namespace wb {

class PollPlanner {
 public:
  explicit PollPlanner(const PollConfig& poll) : poll_(poll) { model_.set_prior_seconds(poll.prior_render_seconds); }
  void set_bounds(const PollConfig& poll);

  // Learned render times: from / to the store's record.
  void load(const nlohmann::json& model) {
    model_ = RenderModel::from_json(model);
    model_.set_prior_seconds(poll_.prior_render_seconds);
    plans_.clear();
  }
  nlohmann::json save() const { return model_.to_json(); }
  const RenderModel& model() const { return model_; }

  // A job was accepted at `now_ms` (monotonic); or, after a restart, is followed
  // again (`submitted_ms` back in time, nothing else known).
  void submitted(const Shot& shot, int64_t submitted_ms);
  // A status answer: QUEUED or PROCESSING, seen at now_ms.
  void seen(const Shot& shot, const std::string& status, int64_t now_ms);
  // The job completed; metrics' inference_time and queue_time when given.
  // Returns true when the render model learned (the caller persists it).
  // Its timings also say when its worker came free: the oldest of our jobs
  // still waiting then started at that moment (FIFO). take_moved_keys() names
  // the jobs whose start this moved, and the parked jobs of its class when it
  // is the class's first completion, so the caller plans their polls again.
  bool completed(const Shot& shot, std::optional<double> render_s, std::optional<double> queue_s);
  // The job is no longer followed (ended, cancelled, resubmitted). A scout's
  // place goes to the oldest parked job of its class (take_moved_keys()).
  void forget(const std::string& key);
  // The jobs whose next poll moved since the last call (a start learned from a
  // predecessor's timings, a scouting ended or a scout's place handed on): the
  // caller plans their polls again (next_poll). Cleared by the call.
  std::vector<std::string> take_moved_keys() { return std::exchange(moved_, {}); }
  static constexpr int kScoutsPerClass = 32;

  // The next status poll of a followed job (monotonic ms), `jitter` in [0, 1);
  // on a slot (slotted()).
  int64_t next_poll(const Shot& shot, int64_t now_ms, double jitter);
  // A planned poll rounded up to the next slot of min_interval / 40 (50 ms at the
  // shipped 2 s), unless that passes the ceiling: polls planned a few ms apart go
  // out, and are answered, in one turn of the daemon's loop instead of a wake-up
  // each (a wake-up and a loop turn cost more than the request on a small VM).
  // Half a slot later on average: 0.02% of a 138 s render; never earlier.
  int64_t slotted(int64_t at_ms, int64_t now_ms) const;
  static constexpr int kSlotsPerMinInterval = 40;
  // When a followed job started rendering, as far as is known (the earliest it may
  // have; its submit when no queue was seen), or nullopt while it is believed to
  // wait in the provider's queue or is not followed.
  std::optional<int64_t> rendering_since_ms(const Shot& shot) const;
  // What the planner believes of a followed job, for a debug log line: times in
  // seconds relative to `now_ms`.
  std::string describe(const Shot& shot, int64_t now_ms) const;
  // The first poll of a job followed again after a restart: spread over the
  // gap the policy would leave at this point, so that thousands do not poll at once.
  int64_t first_poll_after_restart(const Shot& shot, int64_t now_ms, double unit);

  // How many more jobs may be submitted to wait at the provider, or nullopt
  // when no queue has been seen (no cap from here).
  std::optional<int> queue_room();
  int waiting_at_provider() const { return queued_count_; }
  std::optional<int> workers() const;
  // The expected render time of a shot's class, seconds.
  double expected_render_s(const ShotSpec& spec);

 private:
  struct Job {
    RenderClass cls;
    double submitted_s = 0;
    double start_s = 0;        // earliest it may have started rendering
    double start_spread_s = 0; // it started within [start_s, start_s + spread]
    double last_poll_s = 0;    // last seen not completed (or known not to have been)
    double polled_s = 0;       // last poll that found it not completed (or its submit)
    bool queued = false;       // last seen QUEUED (or believed to wait)
    bool started_known = false;
    double expected_start_s = 0;  // while queued: the queue model's estimate
    bool start_exact = false;     // learned from a predecessor's timings
    double queued_since_s = 0;    // first seen QUEUED
    bool seen_processing = false; // some poll since it was followed said PROCESSING
    bool scout = false;           // polled on the plan while its class is unknown
    bool parked = false;          // polled at the ceiling until its class's first completion
    bool candidate = false;       // drawn for a scout once (PollPlanner::parks)
  };
  struct Scouting {                // of one class, while it is unknown
    int scouts = 0;                // jobs scouting now
    int candidates = 0;            // jobs drawn for so far
    std::vector<std::string> drawn;  // the scouts drawn at random (the other half: the first seen)
  };
  struct Plan {
    size_t built_own = 0;        // the class's own observations when built
    size_t built_elsewhere = 0;  // every class's observations when built
    std::unique_ptr<PollPlan> plan;
    RenderDist dist;
    double mean_s = 0;
  };
  static RenderClass class_of(const ShotSpec& spec);
  Job& job_of(const Shot& shot);
  const Plan& plan_for(const RenderClass& cls, double spread_s);
  // Sets the expected start of every queued job (FIFO, oldest first), when
  // something changed or a poll interval has passed.
  void plan_queue(double now_s);
  // Whether a rendering job waits for its class's scouts (see above); makes it a
  // scout when there is room.
  bool parks(const std::string& key, Job& j);
  bool scouting(const RenderClass& cls) const;
  // A scout leaves (returns whether it was a drawn one); a scout that left
  // without completing hands its place on.
  bool drop_scout(const std::string& key, const Job& j);
  void hand_on_scout(const RenderClass& cls, bool drawn);

  PollConfig poll_;
  RenderModel model_;
  QueueModel queue_;
  std::map<std::string, Job> jobs_;               // by shot key
  std::map<std::string, Plan> plans_;             // by class key + spread bucket
  int most_seen_processing_ = 0;  // while no queue model: a provisional worker count
  bool queue_seen_ = false;       // some job of ours was seen QUEUED
  int queued_count_ = 0;          // jobs believed waiting at the provider
  size_t learned_elsewhere_ = 0;  // observations of every class (neighbours shift priors)
  bool starts_dirty_ = true;
  std::vector<std::string> moved_;
  std::map<std::string, Scouting> scouting_;   // by class key
  std::mt19937_64 rng_{0x5c0075};              // draws the scouts
  std::set<std::string> completed_classes_;    // classes with a completion seen since the start
  double starts_planned_at_ = -1e18;
  double rendering_counted_at_ = -1e18;
};

}  // namespace wb
