// What an operator asks of shots ("BATCH" or "BATCH/SHOT"): retry and cancel.
// A HELD shot whose job can still be followed resumes at its step for free; a
// new submit (a new billed job) is made only when allowed, and otherwise
// listed with its estimated cost.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "jobs/engine/batches.h"
#include "jobs/engine/core.h"
#include "jobs/output.h"

namespace wb {

struct OperatorResult {
  std::vector<std::string> changed;
  std::vector<std::string> skipped;  // "id: why"
  std::vector<std::string> plan;     // retry: "id: what is done and what it costs"
  std::vector<std::string> kept_paid;  // cancel: ids whose paid take keeps running (also in skipped)
};

enum class Resubmit { no, yes };

// The step `retry` resumes a retryable shot at for free (its job can still be
// followed), or PENDING when it needs a new submit (a new billed job: --yes).
ShotState free_resume_step(const Shot& shot);

class Operator {
 public:
  Operator(Core& core, Batches& batches, OutputDir& output) : core_(core), batches_(batches), output_(output) {}
  OperatorResult retry(const std::string& target, Resubmit allow_resubmit);
  // Cancel ends shots not ended, but never abandons a take already paid for
  // (on the provider: IN_FLIGHT, FETCHING, DOWNLOADING) unless `abandon`: such a
  // shot is followed to its end and kept (`kept_paid`, with why in `skipped`);
  // when a revision's next take waits behind it (Shot::next_take), that next
  // take is cancelled. A paid job abandoned (it cannot be stopped at the
  // provider) has its estimated cost counted, in the record (report.json) and
  // the ledger's `operator_cancel` line, since the provider bills it anyway.
  OperatorResult cancel(const std::string& target, bool abandon = false);
  // A HELD shot ("BATCH/SHOT") follows the provider's job `request_id`, found by a
  // person (e.g. on the provider's dashboard after an ambiguous submit): polled,
  // fetched, downloaded, DONE, never submitted again. Throws wb::Error, changing
  // nothing, when the shot is not HELD, the id is not a plain token, or the id
  // already belongs to another shot or to an earlier take of this one. The
  // ledger records the adoption.
  OperatorResult adopt(const std::string& target, const std::string& request_id);
  // Back to PENDING for a new submit, with a ledger line saying why.
  void requeue(Shot shot, const std::string& ledger_event, const std::string& reason);
  // A shot followed again (after a resume or a requeue): the follower learns of it.
  std::function<void(Shot&)> on_followed;

 private:
  std::vector<Shot> target_shots(const std::string& target) const;
  // The take of `key` that the ledger gave `request_id` to, 0 when it names none.
  int take_of_request(const std::string& key, const std::string& request_id) const;
  // Back to following its job at `step` (operator retry of a HELD shot).
  void resume_at(Shot shot, ShotState step);

  Core& core_;
  Batches& batches_;
  OutputDir& output_;
};

}  // namespace wb
