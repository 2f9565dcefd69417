#include "jobs/engine/gates.h"

#include "jobs/engine/spend.h"

#include <algorithm>
#include <cstdio>

namespace wb {

std::optional<Wait> common_gate(const SubmitState& st, const TimeWindow& window, TimePoint wall, MonoPoint now) {
  const int64_t now_ms = mono_ms(now);
  if (st.paused) return Wait{"waiting: submits paused by an operator (wanbatch resume)", 0};
  if (!window.contains(wall)) {
    // The window is local wall time; the wait for it runs on the monotonic clock
    // (at most a minute at a time, so a wall-clock step is noticed).
    TimePoint open = window.next_open(wall);
    int64_t ahead = std::clamp<int64_t>(to_epoch_ms(open) - to_epoch_ms(wall), 0, 60000);
    return Wait{"waiting: outside the submit window " + window.text() + " (opens " + iso8601_utc(open) + ")",
                now_ms + std::max<int64_t>(ahead, 1)};
  }
  if (now < st.blocked_until)
    return Wait{"waiting: " + st.blocked_reason + " (until " +
                    iso8601_utc(wall + std::chrono::duration_cast<Millis>(st.blocked_until - now)) + ")",
                mono_ms(st.blocked_until)};
  if (!st.balance_read)
    return Wait{"waiting: reading the credit balance" + (st.balance_error.empty() ? "" : " (" + st.balance_error + ")"),
                0};
  if (st.credits_wait) {
    const std::string b = st.balance ? format_credits(to_micro(*st.balance)) : "unknown";
    return Wait{"waiting: insufficient credits (balance " + b +
                    "); submits resume when the balance recovers",
                0};
  }
  return std::nullopt;
}

std::optional<Wait> in_flight_gate(int in_slot, int max_in_flight) {
  if (in_slot < max_in_flight) return std::nullopt;
  return Wait{"waiting: in-flight cap (limits.max_in_flight " + std::to_string(max_in_flight) + ")", 0};
}

std::optional<Wait> queue_gate(int waiting_at_provider, int cap) {
  if (waiting_at_provider < cap) return std::nullopt;
  return Wait{"waiting: " + std::to_string(waiting_at_provider) +
                  " jobs already wait in the provider's queue (more would risk their records expiring unfetched)",
              0};
}

}  // namespace wb
