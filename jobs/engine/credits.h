// The credit balance: read from the API every credits.check_interval_seconds
// (every 30 s at most while submits wait for a top-up), and taken from every
// result that carries remaining_credits. A balance that covers the next shot
// ends a credits wait.
#pragma once

#include "jobs/engine/core.h"
#include "jobs/engine/gates.h"

namespace wb {

class Credits {
 public:
  Credits(Core& core, SubmitState& state) : core_(core), state_(state) {}
  // Starts a balance read when one is due; returns when the next one is (monotonic ms).
  int64_t tick(MonoPoint now);
  void set_balance(double balance);
  // A 406: read again soon.
  void soon();

 private:
  Core& core_;
  SubmitState& state_;
  bool on_wire_ = false;
  MonoPoint next_check_{};
};

}  // namespace wb
