// Following a submitted job: status polls while it is QUEUED or PROCESSING
// (when, the PollPlanner decides), the result once COMPLETED (its cost, its
// output URL, its timings), and what a problem answer means (FAILED, an
// expired record, a bug in the answer, a passing fault). Polls wait for the
// request budget (limits.requests_per_minute) and slow down after a 429.
#pragma once

#include <functional>
#include <string>

#include "jobs/engine/core.h"
#include "jobs/engine/poll_planner.h"
#include "jobs/segmind.h"

namespace wb {

class Follower {
 public:
  Follower(Core& core, PollPlanner& planner) : core_(core), planner_(planner) {}

  // The shot's step is due: a status poll (IN_FLIGHT) or the result (FETCHING).
  // Returns false when the request budget has no room (the shot is due again later).
  bool start(Shot& shot);
  // How much longer than planned polls wait (after 429s); 1 when none lately.
  double stretch() const { return stretch_; }
  // Plans again the polls of the jobs the planner moved (PollPlanner::take_moved_keys),
  // `because` of this shot's news (for the debug log).
  void replan_moved(const std::string& because);

  // A result carried the balance: the credits part takes it.
  std::function<void(double)> on_balance;
  // A job was resubmitted (on_expired: resubmit): the operator part requeues it.
  std::function<void(Shot&, const std::string& event, const std::string& reason)> requeue;
  // The render model learned: persist it now and then.
  std::function<void()> on_learned;
  // A status poll said the job is still QUEUED or PROCESSING (monotonic now, ms).
  std::function<void(Shot&, int64_t)> on_running;

 private:
  void on_poll(const std::string& key, const HttpResponse& r);
  void on_fetch(const std::string& key, const HttpResponse& r);
  void on_problem(Shot& shot, const char* step, Verdict verdict, const std::string& message,
                  const std::optional<TimePoint>& reset_at);
  void slow_down(MonoPoint now);

  Core& core_;
  PollPlanner& planner_;
  double stretch_ = 1.0;
  MonoPoint last_429_{};
};

}  // namespace wb
