#include "jobs/engine/credits.h"

#include <cmath>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>

#include "jobs/segmind.h"

namespace wb {

namespace {
Millis seconds(double s) { return Millis(static_cast<int64_t>(s * 1000.0)); }
}  // namespace

int64_t Credits::tick(MonoPoint now) {
  if (!on_wire_ && now >= next_check_ && !core_.budget.try_take(now, RequestBudget::Use::submit)) {
    // The request budget is spent on following jobs: the balance waits a
    // while (never a busy loop), and a tight budget is not eaten by balance reads.
    next_check_ = core_.budget.next_available(now, RequestBudget::Use::submit) +
                  std::max(Millis(1000), Millis(static_cast<int64_t>(60000.0 / std::max(1.0, core_.budget.per_minute()))));
    if (!state_.balance_read) state_.balance_read = true;  // submits need not wait for a read that cannot go
  } else if (!on_wire_ && now >= next_check_) {
    on_wire_ = true;
    core_.transport.start(core_.api.credits(), [this](HttpResponse r) {
      core_.events.emit(Event::request("", "credits", r.status));
      on_wire_ = false;
      state_.balance_read = true;  // answered or failed: submits need not wait for it any longer
      next_check_ = core_.mono() + interval();
      auto balance = parse_credits(r);
      if (!balance) {
        spdlog::warn("credit balance check failed: {}", error_message(r));
        return;
      }
      set_balance(*balance);
      spdlog::debug("credit balance {}", *balance);
    });
  }
  if (on_wire_) return std::numeric_limits<int64_t>::max();
  return std::max(mono_ms(next_check_), mono_ms(now) + 1);
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
