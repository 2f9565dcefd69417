#include "jobs/engine/credits.h"

#include <cmath>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <limits>

#include "jobs/segmind.h"

namespace wb {

namespace {
Millis seconds(double s) { return Millis(static_cast<int64_t>(s * 1000.0)); }
}  // namespace

int64_t Credits::tick(MonoPoint now) {
  // A reserve set (SIGHUP) while no balance is known: submits wait for a reading again.
  if (reserve_needs_balance() && state_.balance_read) state_.balance_read = false;
  if (!on_wire_ && now >= next_check_ && !core_.budget.try_take(now, RequestBudget::Use::submit)) {
    // The request budget is spent on following jobs: the balance waits a
    // while (never a busy loop), and a tight budget is not eaten by balance reads.
    next_check_ = core_.budget.next_available(now, RequestBudget::Use::submit) +
                  std::max(Millis(1000), Millis(static_cast<int64_t>(60000.0 / std::max(1.0, core_.budget.per_minute()))));
    // Submits need not wait for a read that cannot go, unless a reserve needs it.
    if (!state_.balance_read && !reserve_needs_balance()) state_.balance_read = true;
  } else if (!on_wire_ && now >= next_check_) {
    on_wire_ = true;
    core_.transport.start(core_.api.credits(), [this](HttpResponse r) {
      core_.events.emit(Event::request("", "credits", r.status));
      on_wire_ = false;
      next_check_ = core_.mono() + interval();
      auto balance = parse_credits(r);
      if (!balance) {
        const std::string why = error_message(r);
        spdlog::warn("credit balance check failed: {}", why);
        if (!state_.balance) {
          // No balance known yet: read again soon (backing off up to the interval), and
          // while limits.credit_reserve asks for one, submits keep waiting for it.
          ++failed_reads_;
          const double backoff = core_.settings.retry.base_delay_seconds *
                                 std::pow(2.0, static_cast<double>(std::min(failed_reads_ - 1, 20)));
          const Millis wait = std::min(interval(), std::max(Millis(1), seconds(backoff)));
          next_check_ = core_.mono() + wait;
          char again[32];
          std::snprintf(again, sizeof again, "%.1f", static_cast<double>(wait.count()) / 1000.0);
          // Kept for the wait's reason: also shown when a reserve is set later (SIGHUP).
          state_.balance_error = "the last read failed: " + why +
                                 "; limits.credit_reserve needs a known balance, read again in " + again + " s";
          if (reserve_needs_balance()) return;
        }
        state_.balance_read = true;  // failed, and no reserve waits for it: submits go
        return;
      }
      failed_reads_ = 0;
      state_.balance_error.clear();
      state_.balance_read = true;
      set_balance(*balance);
      spdlog::debug("credit balance {}", *balance);
    });
  }
  if (on_wire_) return std::numeric_limits<int64_t>::max();
  return std::max(mono_ms(next_check_), mono_ms(now) + 1);
}

bool Credits::reserve_needs_balance() const {
  return core_.settings.limits.credit_reserve > 0 && !state_.balance;
}

Millis Credits::interval() const {
  Millis interval = seconds(core_.settings.credits.check_interval_seconds);
  if (state_.credits_wait) interval = std::min(interval, Millis(30000));
  // Under a request budget a balance read is one of ten a budget's minute
  // at most, so that submits are not starved by it.
  if (core_.budget.limited()) interval = std::max(interval, seconds(600.0 / core_.budget.per_minute()));
  return interval;
}

void Credits::balance_from_result(double balance) {
  // Only the API's own read can raise the balance (a top-up): a result's figure is
  // taken when it is finite and no higher than what is known, so a garbled or hostile
  // one (1e300) cannot open the budget; a higher one waits for the next read.
  if (!std::isfinite(balance) || balance < 0 || !state_.balance || balance > *state_.balance) return;
  state_.balance_read = true;
  set_balance(balance);
  if (!on_wire_) next_check_ = std::max(next_check_, core_.mono() + interval());
}

void Credits::read_before(double balance, std::optional<Millis> next_in) {
  state_.balance_read = true;
  set_balance(balance);
  if (!on_wire_) next_check_ = core_.mono() + (next_in ? std::max(Millis(0), *next_in) : interval());
}

Millis Credits::next_read_in(MonoPoint now) const {
  if (on_wire_ || next_check_ <= now) return Millis(0);
  return std::chrono::duration_cast<Millis>(next_check_ - now);
}

void Credits::soon() {
  next_check_ = std::min(next_check_,
                         core_.mono() + std::min(Millis(30000), seconds(core_.settings.credits.check_interval_seconds)));
}

void Credits::set_balance(double balance) {
  core_.spend.set_balance(balance);
  state_.balance = balance;
  core_.events.emit(Event::balance(balance));
  if (!state_.credits_wait) return;
  Micro smallest = std::numeric_limits<Micro>::max();
  for (const auto& [key, shot] : core_.book.pending())
    if (const Shot* s = core_.book.find(shot)) smallest = std::min(smallest, core_.spend.costs().estimate(s->spec));
  auto left = core_.spend.available();
  if (smallest == std::numeric_limits<Micro>::max() || (left && *left >= smallest)) {
    state_.credits_wait = false;
    spdlog::info("credit balance {} covers the next shot: submits resume", balance);
  }
}

}  // namespace wb
