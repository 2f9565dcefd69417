// A batch's end: once none of its shots is unfinished, its report.json is
// written, the batch is recorded finished and batch_finished is told. A
// report that cannot be written yet (the output share is down) is tried again
// on later ticks; a finished batch reopens when an operator retries one of
// its shots.
#pragma once

#include <functional>
#include <set>
#include <string>

#include "jobs/engine/core.h"
#include "jobs/output.h"

namespace wb {

class Batches {
 public:
  Batches(Core& core, OutputDir& output) : core_(core), output_(output) {}
  // The batch may have ended: finish it when none of its shots is unfinished.
  void maybe_finish(const std::string& batch);
  // Retries the reports that could not be written yet.
  void finish_pending();
  // Opens a finished batch again (a shot of it goes again).
  void reopen(const std::string& batch);
  // Every loaded unfinished batch is checked once (its shots may all have ended).
  void check_all();

  // A stored unfinished shot the book lacked: the scheduler follows it again.
  std::function<void(Shot)> on_adopt;
  // Runs when a batch has ended; the argument is the batch record (finished).
  std::function<void(const BatchRecord&)> on_finished;

 private:
  Core& core_;
  OutputDir& output_;
  std::set<std::string> finishing_;
};

}  // namespace wb
