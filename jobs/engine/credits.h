// The credit balance: read from the API every credits.check_interval_seconds
// (every 30 s at most while submits wait for a top-up), and taken from every
// result that carries remaining_credits, which counts as a read: the next API
// read is an interval after it, so while results come no request is spent on
// the balance. A balance that covers the next shot ends a credits wait.
// While no balance is known, a failed read is tried again after
// retry.base_delay_seconds, doubling up to the interval; submits wait for the
// first read, and past a failed one only when limits.credit_reserve is set (a
// reserve cannot be kept without a balance).
#pragma once

#include <optional>

#include "jobs/engine/core.h"
#include "jobs/engine/gates.h"

namespace wb {

class Credits {
 public:
  Credits(Core& core, SubmitState& state) : core_(core), state_(state) {}
  // Starts a balance read when one is due; returns when the next one is (monotonic ms).
  int64_t tick(MonoPoint now);
  void set_balance(double balance);
  // A reading made before this run (Scheduler::set_balance_read): the first
  // read is done, the next one `next_in` from now (an interval when not given).
  void read_before(double balance, std::optional<Millis> next_in = std::nullopt);
  // How long until the next API read is due (0: due or on the wire now).
  Millis next_read_in(MonoPoint now) const;
  // A result's remaining_credits: the balance, and the next read an interval later,
  // when it is finite, >= 0 and no higher than the balance known (never before the
  // first API read; a higher figure waits for the next read).
  void balance_from_result(double balance);
  // A 406: read again soon.
  void soon();

 private:
  Core& core_;
  SubmitState& state_;
  bool on_wire_ = false;
  MonoPoint next_check_{};
  int failed_reads_ = 0;  // reads failed in a row while no balance is known
  Millis interval() const;
  // limits.credit_reserve is set and no balance is known: submits wait for a read.
  bool reserve_needs_balance() const;
};

}  // namespace wb
