// Why submits wait, as pure functions of the state: no I/O, no clock of their
// own. The state that gates read lives in SubmitState (the submitter and the
// credit reader change it); the answer is a reason a person reads and the
// monotonic time at which to look again.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "jobs/throttle.h"
#include "jobs/util.h"

namespace wb {

struct SubmitState {
  bool paused = false;               // by an operator (persisted)
  MonoPoint blocked_until{};         // a 429 or a refused key
  std::string blocked_reason;
  int consecutive_429 = 0;
  bool balance_read = false;         // the first balance check has been answered
  std::string balance_error;         // while no balance is known: why the last read failed
  bool credits_wait = false;         // a 406 Insufficient credits: wait for a top-up
  std::optional<double> balance;     // for the message
};

struct Wait {
  std::string reason;  // "waiting: ..."
  // Look again at this monotonic time (ms); 0: when something changes.
  int64_t until_ms = 0;
};

// What holds every submit back, whatever the shot: the pause, the window, a
// 429 or refused key, the first balance read, a credits wait.
std::optional<Wait> common_gate(const SubmitState& state, const TimeWindow& window, TimePoint wall, MonoPoint now);

// The in-flight cap: shots submitted and not yet ended.
std::optional<Wait> in_flight_gate(int in_slot, int max_in_flight);

// How many of our jobs may wait at the provider (jobs/engine/queue_model.h)
// against how many wait now.
std::optional<Wait> queue_gate(int waiting_at_provider, int cap);

}  // namespace wb
